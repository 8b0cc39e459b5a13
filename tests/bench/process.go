package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ambient-mesh/mesh/tests/netlab"
)

const (
	// readyTimeout bounds a child's start-up.
	readyTimeout = 10 * time.Second
	// stopGrace is how long a child has to exit after SIGTERM.
	stopGrace = 5 * time.Second
)

// Proc is a child process of the harness, running in one of the topology's
// namespaces. One goroutine per Proc reads its events and reaps it.
type Proc struct {
	Name string

	cmd    *exec.Cmd
	pid    int // of an externalProc, which has no cmd
	onMark func(string)
	ready  chan struct{} // closed at the ready event
	exited chan struct{} // closed once reaped; waitErr is set by then

	mu      sync.Mutex
	conns   []ConnReport
	result  *ClientResult
	waitErr error
}

// startProc starts exe as a child role in ns and waits until it is ready.
// onMark, if not nil, is called from the Proc's reader with each mark.
func startProc(ctx context.Context, exe string, ns Netns, name, role string, args []string, onMark func(string)) (*Proc, error) {
	cmd := exec.Command(exe, append([]string{childCommand, role}, args...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := netlab.StartInNetns(ns.Path(), cmd); err != nil {
		stdout.Close() // Start closes it on its own errors, not on ours
		return nil, fmt.Errorf("start %s in %s: %w", name, ns.Name, err)
	}
	p := &Proc{
		Name:   name,
		cmd:    cmd,
		onMark: onMark,
		ready:  make(chan struct{}),
		exited: make(chan struct{}),
	}
	go p.run(stdout)

	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-p.ready:
		return p, nil
	case <-p.exited:
		err := p.err()
		if err == nil {
			err = errors.New("exit status 0")
		}
		return nil, fmt.Errorf("%s exited before it was ready: %w", name, err)
	case <-t.C:
		err = fmt.Errorf("%s not ready after %s", name, readyTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	return nil, errors.Join(err, p.Stop())
}

// run reads events until the child closes its stdout, then reaps it.
// os/exec requires all reads to finish before Wait.
func (p *Proc) run(stdout io.Reader) {
	defer close(p.exited)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	readyClosed := false
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // not ours; the child's stray output
		}
		switch ev.Type {
		case evReady:
			if !readyClosed {
				close(p.ready)
				readyClosed = true
			}
		case evConn:
			if ev.Conn != nil {
				p.mu.Lock()
				p.conns = append(p.conns, *ev.Conn)
				p.mu.Unlock()
			}
		case evMark:
			if p.onMark != nil {
				p.onMark(ev.Mark)
			}
		case evResult:
			p.mu.Lock()
			p.result = ev.Result
			p.mu.Unlock()
		}
	}
	// Drain whatever is left (a line too long) so the child never blocks
	// on a full pipe, then reap it.
	_, _ = io.Copy(io.Discard, stdout)
	err := p.cmd.Wait()
	p.mu.Lock()
	p.waitErr = err
	p.mu.Unlock()
}

// Pid returns the child's process id.
func (p *Proc) Pid() int {
	if p.cmd == nil {
		return p.pid
	}
	return p.cmd.Process.Pid
}

// externalProc names a process the harness did not start as a child role
// (a ztunnel), for its /proc figures only; it cannot be stopped through it.
func externalProc(name string, pid int) *Proc { return &Proc{Name: name, pid: pid} }

// Conns returns the connections the child (a server) has reported so far.
func (p *Proc) Conns() []ConnReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.conns)
}

func (p *Proc) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// wait waits for the child to exit by itself and returns its result; if
// ctx ends first, it stops the child.
func (p *Proc) wait(ctx context.Context) (*ClientResult, error) {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), p.Stop())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, p.waitErr)
	}
	if p.result == nil {
		return nil, fmt.Errorf("%s exited without a result", p.Name)
	}
	return p.result, nil
}

// Stop asks the child to exit, kills it if it has not after a grace
// period, and reaps it. Stopping an exited child is a no-op.
func (p *Proc) Stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	// The child may exit between the check and the signal; then the
	// signal finds no process, which is fine.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.exited:
		if err := p.err(); err != nil {
			return fmt.Errorf("stop %s: %w", p.Name, err)
		}
		return nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("stop %s: killed after %s", p.Name, stopGrace)
}
