package netlab_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/netlab"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces; run `go test` as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs iproute2's ip command")
	}
}

// TestTopology builds two pods on node1 and one on node2 and checks what
// users rely on: every pod reaches every other over real TCP with its own
// address (no NAT), the machine's own namespace gains no links, and Close
// removes every namespace.
func TestTopology(t *testing.T) {
	needRoot(t)
	rootBefore := links(t, "")
	top, err := netlab.New(t.Context(), netlab.PidPrefix("nltest"), []netlab.PodSpec{{"a", 1}, {"b", 1}, {"c", 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = top.Close() }) // also on failure; Close is idempotent

	if got := len(top.Pods); got != 3 {
		t.Fatalf("%d pods, want 3", got)
	}
	for _, tc := range []struct {
		name, ip string
		node     int
	}{{"a", "10.200.1.10", 1}, {"b", "10.200.1.11", 1}, {"c", "10.200.2.10", 2}} {
		if p := top.Pod(tc.name); p.IP != netip.MustParseAddr(tc.ip) || p.Node != tc.node {
			t.Errorf("pod %s: %s on node%d, want %s on node%d", tc.name, p.IP, p.Node, tc.ip, tc.node)
		}
	}

	// Every link the topology made, in any of its namespaces.
	var ours []string
	for _, ns := range top.Namespaces() {
		for _, l := range links(t, ns.Path()) {
			if l != "lo" && !slices.Contains(ours, l) {
				ours = append(ours, l)
			}
		}
	}

	// Each pod serves its peer's address back to whoever connects.
	addrs := map[string]netip.AddrPort{}
	for _, p := range top.Pods {
		ln := listen(t, p)
		addrs[p.Name] = netip.MustParseAddrPort(ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprint(c, c.RemoteAddr())
				c.Close()
			}
		}()
	}
	for _, src := range top.Pods {
		for _, dst := range top.Pods {
			if src.Name == dst.Name {
				continue
			}
			local, seen := roundTrip(t, src, addrs[dst.Name])
			if local.Addr() != src.IP || seen != local {
				t.Errorf("%s → %s: connected from %s, server saw %s; want %s's own address %s both ends", src.Name, dst.Name, local, seen, src.Name, src.IP)
			}
		}
	}

	var appeared []string
	for _, l := range links(t, "") {
		if !slices.Contains(rootBefore, l) && slices.Contains(ours, l) {
			appeared = append(appeared, l)
		}
	}
	if len(appeared) > 0 {
		t.Errorf("links %v appeared in the machine's own namespace", appeared)
	}

	if err := top.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range top.Namespaces() {
		if strings.Contains(string(out), ns.Name) {
			t.Errorf("namespace %s left behind", ns.Name)
		}
		if _, err := os.Stat(ns.Path()); err == nil {
			t.Errorf("%s left behind", ns.Path())
		}
	}
}

// TestStale checks that Stale lists a namespace whose owner is gone, and
// neither a live owner's nor another base's.
func TestStale(t *testing.T) {
	needRoot(t)
	ctx := t.Context()
	// A pid that existed and is gone: a reaped child's. It could be reused
	// meanwhile, which would only make the test fail spuriously.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("nltest-%d-x", gone.Process.Pid)
	live := netlab.PidPrefix("nltest") + "-x"
	other := fmt.Sprintf("nltestz-%d-x", gone.Process.Pid)
	for _, n := range []string{dead, live, other} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", n, err, out)
		}
		t.Cleanup(func() { _ = netlab.DeleteNetns(context.Background(), n) })
	}
	stale, err := netlab.Stale(ctx, "nltest")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stale, []string{dead}) {
		t.Errorf("Stale = %v, want [%s]", stale, dead)
	}
	if err := netlab.DeleteNetns(ctx, stale...); err != nil {
		t.Fatal(err)
	}
	if stale, err := netlab.Stale(ctx, "nltest"); err != nil || len(stale) != 0 {
		t.Errorf("after DeleteNetns: Stale = %v, %v", stale, err)
	}
}

// links lists the link names of the namespace at nsPath, or of the
// machine's own if nsPath is empty.
func links(t *testing.T, nsPath string) []string {
	t.Helper()
	var names []string
	list := func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	}
	var err error
	if nsPath == "" {
		err = list()
	} else {
		err = netlab.InNetns(nsPath, list)
	}
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func listen(t *testing.T, p netlab.Pod) net.Listener {
	t.Helper()
	var ln net.Listener
	err := netlab.InNetns(p.NS.Path(), func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(p.IP, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// roundTrip connects from pod src to dst and returns the connection's
// local address and the one the server reports seeing.
func roundTrip(t *testing.T, src netlab.Pod, dst netip.AddrPort) (local, seen netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var c net.Conn
	err := netlab.InNetns(src.NS.Path(), func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", dst.String())
		return err
	})
	if err != nil {
		t.Fatalf("%s → %s: %v", src.Name, dst, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s → %s: read: %v", src.Name, dst, err)
	}
	seen, err = netip.ParseAddrPort(string(b))
	if err != nil {
		t.Fatalf("%s → %s: server said %q", src.Name, dst, b)
	}
	return netip.MustParseAddrPort(c.LocalAddr().String()), seen
}
