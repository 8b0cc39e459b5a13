package ztunnel_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestPodRemovalDrainsThenCuts unenrolls the server pod: ztunnel stops
// serving it at once (its redirection stays, so plaintext to it is refused
// with nothing on 15006, and mesh clients cannot open tunnels to it), its
// open connections keep working through the drain timeout and are cut
// after it.
func TestPodRemovalDrainsThenCuts(t *testing.T) {
	const drain = 2 * time.Second
	m := newMesh(t, standardPods, "--pod-drain-timeout="+drain.String())
	startApp(t, m, "server", 8080)
	target := addr(m, "server", 8080)
	hbone := openEcho(t, m, "client", target)
	plain := openEcho(t, m, "outsider", target)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	removed := time.Now()
	if err := m.Unenroll(ctx, "server"); err != nil {
		t.Fatal(err)
	}
	// Each open connection pings until it fails; the time it failed at.
	type cut struct {
		name string
		at   time.Duration
		err  error
	}
	cuts := make(chan cut, 2)
	for name, e := range map[string]*echoConn{"client (HBONE)": hbone, "outsider (plaintext)": plain} {
		go func() {
			for time.Since(removed) < drain+5*time.Second {
				if err := e.ping(); err != nil {
					cuts <- cut{name, time.Since(removed), err}
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			cuts <- cut{name, time.Since(removed), nil}
		}()
	}

	waitFor(t, 5*time.Second, "the server pod gone from node2's config dump", func() error {
		d, _ := configDump(t, m, 2)
		if slices.Contains(d.podNames(), "default/server") {
			return fmt.Errorf("pods %v", d.podNames())
		}
		return nil
	})
	// Plaintext to the pod is still redirected to 15006, where nothing
	// listens any more.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := exchange(ctx, m, "outsider", target, "new\n"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("new plaintext connection to the removed pod: %v; want connection refused", err)
	}
	expectRefused(t, m, "client", target)
	if s := time.Since(removed); s > drain*3/4 {
		t.Logf("checks of new connections took %s: the drain window was not all watched", s)
	}

	for range 2 {
		c := <-cuts
		switch {
		case c.err == nil:
			t.Errorf("%s: still echoing %s after removal; want it cut after the %s drain", c.name, c.at.Round(time.Millisecond), drain)
		case c.at < drain*3/4:
			t.Errorf("%s: cut %s after removal, before the %s drain timeout: %v", c.name, c.at.Round(time.Millisecond), drain, c.err)
		default:
			t.Logf("%s: cut %s after removal: %v", c.name, c.at.Round(time.Millisecond), c.err)
		}
	}
	waitLog(t, m, 2, "drain timed out; connections cut", "pod=default/server")
}
