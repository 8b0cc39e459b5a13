package ztunnel_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/zds"
	"github.com/ambient-mesh/mesh/tests/meshlab"
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

// TestSIGTERMDrainsThenExits stops the client's ztunnel as the kubelet
// does: it takes no new connections at once, carries the open one through
// the termination drain period, then cuts it and exits.
func TestSIGTERMDrainsThenExits(t *testing.T) {
	const grace = 2 * time.Second
	m := newMesh(t, standardPods, "--termination-drain-duration="+grace.String())
	startApp(t, m, "server", 8080)
	target := addr(m, "server", 8080)
	e := openEcho(t, m, "client", target)

	exited, err := m.Terminate(1)
	if err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	e.mustPing(t, "right after SIGTERM")
	waitFor(t, grace/2, "new connections from the client refused", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := exchange(ctx, m, "client", target, "new\n"); !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("new connection: %v", err)
		}
		return nil
	})
	e.mustPing(t, "during the drain period")

	select {
	case <-exited:
	case <-time.After(grace + 10*time.Second):
		t.Fatalf("ztunnel still running %s after SIGTERM with a %s drain period", time.Since(signalled).Round(time.Millisecond), grace)
	}
	if took := time.Since(signalled); took < grace*3/4 {
		t.Errorf("ztunnel exited %s after SIGTERM, before its %s drain period, with a connection open", took.Round(time.Millisecond), grace)
	}
	if err := e.ping(); err == nil {
		t.Error("the connection still echoes after ztunnel exited")
	}
	for _, want := range []string{"draining", "drain timed out; connections cut", "ztunnel stopped"} {
		if len(logLines(m, 1, want)) == 0 {
			t.Errorf("node1 log has no %q line", want)
		}
	}
}

// TestConnectionTakenBeforeSIGTERMIsServed: a connection ztunnel accepted
// before SIGTERM, but whose tunnel is still being opened when the drain
// begins, is served, not cut. During a ztunnel upgrade that is the
// connection a client opened just before the old ztunnel stopped taking
// new ones. The test holds the tunnel's dial up by dropping the server
// pod's first HBONE SYNs, signals the client's ztunnel, then lets the SYN
// retransmit through.
func TestConnectionTakenBeforeSIGTERMIsServed(t *testing.T) {
	m := newMesh(t, standardPods, "--termination-drain-duration=10s")
	startApp(t, m, "server", 8080)
	target := addr(m, "server", 8080)

	drop := []string{"INPUT", "-p", "tcp", "--dport", "15008", "--syn", "-j", "DROP"}
	serverNS := m.Topo.Pod("server").NS.Name
	iptablesIn(t, serverNS, append([]string{"-A"}, drop...)...)
	dropped := false
	defer func() {
		if !dropped {
			iptablesIn(t, serverNS, append([]string{"-D"}, drop...)...)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := meshlab.Dial(ctx, m.Topo.Pod("client").NS, target)
	if err != nil {
		t.Fatalf("client -> %s: %v", target, err)
	}
	defer c.Close()
	waitFor(t, 10*time.Second, "the tunnel's SYN dropped at the server pod", func() error {
		out, err := exec.Command("ip", "netns", "exec", serverNS, "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[2] == "DROP" && f[0] != "0" {
				return nil
			}
		}
		return errors.New("no SYN dropped yet")
	})

	exited, err := m.Terminate(1)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node1's ztunnel draining", func() error {
		if len(logLines(m, 1, "draining")) == 0 {
			return errors.New("no draining line yet")
		}
		return nil
	})
	iptablesIn(t, serverNS, append([]string{"-D"}, drop...)...)
	dropped = true

	// The SYN goes again after a second or three; the tunnel opens, and
	// the server's greeting comes through.
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	greeting, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("the connection taken before SIGTERM was not served: %v (got %q)\n%s", err, greeting, strings.Join(logLines(m, 1, ""), "\n"))
	}
	t.Logf("served during the drain: %q", strings.TrimSpace(greeting))
	_ = c.Close()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("ztunnel did not exit after its last connection closed")
	}
}

func iptablesIn(t *testing.T, ns string, rule ...string) {
	t.Helper()
	args := append([]string{"netns", "exec", ns, "iptables", "-w"}, rule...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %s in %s: %v: %s", strings.Join(rule, " "), ns, err, out)
	}
}

// TestNewIdentityWhileCAHangsIsRefusedInTime enrolls a pod of an identity
// the node has no certificate for while the CA takes calls but does not
// answer them. ztunnel must refuse that one Add, saying why, before the
// node agent gives up waiting for its Ack: an agent that gives up resets
// the whole ZDS session and fails the pod's sandbox with a timeout instead
// of the cause. The pods already served keep working, and once the CA
// answers again the same pod enrolls.
func TestNewIdentityWhileCAHangsIsRefusedInTime(t *testing.T) {
	m := newMesh(t, []meshlab.PodSpec{
		{Name: "client", Node: 1, Mesh: true},
		{Name: "server", Node: 2, Mesh: true},
		{Name: "late", Node: 1, ServiceAccount: "late-sa"},
	})
	startApp(t, m, "server", 8080)
	long := openEcho(t, m, "client", addr(m, "server", 8080))
	resets := func() int { return len(logLines(m, 1, "node agent connection ended")) }
	before := resets()

	m.CP.SetCAHolding(true)
	defer m.CP.SetCAHolding(false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := m.Enroll(ctx, "late")
	took := time.Since(start)
	var refused *zds.AckError
	if !errors.As(err, &refused) || !strings.Contains(refused.Message, m.Identity("late")) {
		t.Fatalf("enroll while the CA hangs, after %s: %v; want ztunnel's refusal naming %s", took.Round(time.Millisecond), err, m.Identity("late"))
	}
	if took >= zds.DefaultAckTimeout {
		t.Fatalf("refusal after %s, at or past the node agent's Ack timeout of %s", took.Round(time.Millisecond), zds.DefaultAckTimeout)
	}
	t.Logf("refused after %s: %v", took.Round(time.Millisecond), err)
	if n := resets(); n != before {
		t.Fatalf("the ZDS session was reset (%d new %q lines)", n-before, "node agent connection ended")
	}
	long.mustPing(t, "after the refused add")
	mustExchange(t, m, "client", addr(m, "server", 8080), "after the refused add\n")

	m.CP.SetCAHolding(false)
	waitFor(t, 30*time.Second, "late enrolls once the CA answers", func() error {
		return m.Enroll(ctx, "late")
	})
	if d, _ := configDump(t, m, 1); d.serial(m.Identity("late")) == "" {
		t.Fatalf("no certificate for %s in node1's dump after its add: %v", m.Identity("late"), d.Certificates)
	}
	if n := resets(); n != before {
		t.Fatalf("the ZDS session was reset (%d new %q lines)", n-before, "node agent connection ended")
	}
}
