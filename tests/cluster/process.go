package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one long-running process of the cluster. It outlives the
// harness: it runs in its own session, logs to a file and is found again
// through its pid file.
type daemon struct {
	name string // unique, e.g. "kube-apiserver" or "node1-kubelet"
	argv []string
	// prog is the program the pid must be running: argv[0], or the
	// program after "--" when argv enters a node's namespaces first.
	prog string
	log  string
	pid  string
	// exited is closed when a process this harness started exits.
	exited chan struct{}
}

func (c *Config) daemon(name string, argv ...string) *daemon {
	prog := argv[0]
	for i, a := range argv {
		if a == "--" && i+1 < len(argv) {
			prog = argv[i+1]
			break
		}
	}
	return &daemon{
		name: name,
		argv: argv,
		prog: filepath.Base(prog),
		log:  filepath.Join(c.logDir(), name+".log"),
		pid:  filepath.Join(c.pidDir(), name+".pid"),
	}
}

// running returns the daemon's pid when its pid file names a live process
// that is still the same program.
func (d *daemon) running() (int, bool) {
	b, err := os.ReadFile(d.pid)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if d.exited != nil {
		// Started by this process: its exit is known exactly.
		select {
		case <-d.exited:
			return 0, false
		default:
			return pid, true
		}
	}
	if !processAlive(pid) {
		return 0, false
	}
	// The command line is empty for a moment while a process execs; only a
	// different program means the pid was reused.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || (len(cmdline) > 0 && !bytes.Contains(cmdline, []byte(d.prog))) {
		return 0, false
	}
	return pid, true
}

// processAlive is true for a process that exists and is not a zombie.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// start launches the daemon unless it already runs.
func (d *daemon) start() error {
	if _, ok := d.running(); ok {
		return nil
	}
	for _, dir := range []string{filepath.Dir(d.log), filepath.Dir(d.pid)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== %s starting: %s\n", time.Now().Format(time.RFC3339), strings.Join(d.argv, " "))
	cmd := exec.Command(d.argv[0], d.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	d.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	return writeFile(d.pid, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// stop sends SIGTERM, then SIGKILL after grace, and removes the pid file.
func (d *daemon) stop(grace time.Duration) {
	if pid, ok := d.running(); ok {
		killAndWait(pid, grace)
	}
	_ = os.Remove(d.pid)
}

func killAndWait(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for processAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if processAlive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 50 && processAlive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// errDaemonExited is returned by waitFor when the daemon died while waited on.
var errDaemonExited = errors.New("exited")

// waitFor polls check until it succeeds, the daemon dies, or timeout passes.
// Errors name the daemon's log and quote its last lines, so a crash is never
// a silent hang.
func (d *daemon) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		if _, ok := d.running(); !ok {
			return fmt.Errorf("%s %w while waiting until %s; log %s:\n%s", d.name, errDaemonExited, what, d.log, tail(d.log, 25))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not %s after %s (last error: %v); log %s:\n%s", d.name, what, timeout, last, d.log, tail(d.log, 25))
		case <-d.exited:
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file, indented.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// run executes a short command and returns its combined output in the error.
func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
