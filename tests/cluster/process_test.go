package cluster

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDaemonLifecycle(t *testing.T) {
	c := &Config{StateDir: t.TempDir()}
	d := c.daemon("sleeper", "sleep", "60")
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(time.Second) })
	pid, ok := d.running()
	if !ok {
		t.Fatal("just-started daemon not running")
	}
	// A second start finds it through the pid file and starts nothing.
	again := c.daemon("sleeper", "sleep", "60")
	if err := again.start(); err != nil {
		t.Fatal(err)
	}
	if pid2, ok := again.running(); !ok || pid2 != pid {
		t.Fatalf("second start: pid %d running=%v, want the first pid %d", pid2, ok, pid)
	}
	again.stop(5 * time.Second)
	if processAlive(pid) {
		t.Fatalf("pid %d alive after stop", pid)
	}
	if _, ok := c.daemon("sleeper", "sleep", "60").running(); ok {
		t.Fatal("stopped daemon still reported running")
	}
}

func TestWaitForNamesTheLogOfADaemonThatDied(t *testing.T) {
	c := &Config{StateDir: t.TempDir()}
	d := c.daemon("crasher", "sh", "-c", "echo 'fatal: port in use' >&2; exit 3")
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := d.waitFor(context.Background(), "ready", time.Minute, func(context.Context) error { return errors.New("not yet") })
	if !errors.Is(err, errDaemonExited) {
		t.Fatalf("want an exit error, got %v", err)
	}
	if !strings.Contains(err.Error(), d.log) || !strings.Contains(err.Error(), "fatal: port in use") {
		t.Errorf("error does not name the log and quote it: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %s to notice the exit", time.Since(start))
	}
}

func TestWaitForTimesOutWithTheLastError(t *testing.T) {
	c := &Config{StateDir: t.TempDir()}
	d := c.daemon("slow", "sleep", "60")
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(time.Second) })
	err := d.waitFor(context.Background(), "ready", time.Second, func(context.Context) error { return errors.New("still warming up") })
	if err == nil || errors.Is(err, errDaemonExited) || !strings.Contains(err.Error(), "still warming up") {
		t.Fatalf("want a timeout quoting the last check error, got %v", err)
	}
}

func TestParentOf(t *testing.T) {
	if got, want := parentOf(os.Getpid()), os.Getppid(); got != want {
		t.Fatalf("parentOf(self) = %d, want %d", got, want)
	}
	if got := parentOf(-1); got != 0 {
		t.Fatalf("parentOf(-1) = %d, want 0", got)
	}
}
