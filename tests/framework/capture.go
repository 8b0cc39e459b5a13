//go:build e2e

package framework

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Capture is a packet capture on a node's link to the underlay: what an
// observer on the network between nodes sees.
type Capture struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	errb   SyncBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

// CaptureUnderlay starts tcpdump on the node's underlay link with a BPF
// filter (e.g. "tcp"), writing whole packets. Only the local cluster has
// a link the test can see; elsewhere the test is skipped. The capture
// stops when the test ends, or earlier by Stop.
func (c *Cluster) CaptureUnderlay(t testing.TB, node, filter string) *Capture {
	t.Helper()
	if c.local == nil {
		t.Skip("the underlay is only visible on the local cluster")
	}
	link := c.local.UnderlayLink(node)
	ctx, cancel := context.WithCancel(context.Background())
	cp := &Capture{cancel: cancel, done: make(chan struct{})}
	// Whole packets (-s 0), each handed over and written as it arrives
	// (--immediate-mode, -U). Stop ends it with SIGINT, so that tcpdump
	// flushes what it holds; the context kills it only if it hangs.
	cp.cmd = exec.CommandContext(ctx, "tcpdump", "-i", link, "--immediate-mode", "-U", "-s", "0", "-w", "-", filter)
	cp.cmd.Cancel = func() error { return cp.cmd.Process.Signal(syscall.SIGINT) }
	cp.cmd.WaitDelay = 5 * time.Second
	cp.cmd.Stdout, cp.cmd.Stderr = &cp.out, &cp.errb
	if err := cp.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("tcpdump on %s: %v", link, err)
	}
	go func() { _ = cp.cmd.Wait(); close(cp.done) }()
	t.Cleanup(func() { cp.Stop() })
	// tcpdump says "listening on" once the capture is open.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(cp.stderr(), "listening on") {
		select {
		case <-cp.done:
			t.Fatalf("tcpdump on %s exited: %s", link, cp.errb.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump on %s: not listening after 10s: %s", link, cp.stderr())
		}
	}
	return cp
}

func (cp *Capture) stderr() string { return cp.errb.String() }

// SyncBuffer is a buffer that one goroutine (exec's copier, a process's
// log) writes while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Stop ends the capture and returns the pcap data.
func (cp *Capture) Stop() []byte {
	cp.cancel()
	<-cp.done
	return cp.out.Bytes()
}

// Packets decodes pcap data with tcpdump -r: one line per packet matching
// filter.
func Packets(pcap []byte, filter string) (string, error) {
	args := []string{"-nn", "-r", "-"}
	args = append(args, strings.Fields(filter)...)
	cmd := exec.Command("tcpdump", args...)
	cmd.Stdin = bytes.NewReader(pcap)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tcpdump -r: %w", err)
	}
	return string(out), nil
}
