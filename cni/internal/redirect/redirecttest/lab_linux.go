package redirecttest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/pkg/netns"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

// Ports of the lab's own servers.
const (
	appPort    = 8080 // the enrolled pod's application
	remotePort = 9000 // a server on the peer pod
	dnsPort    = 53   // a DNS stand-in on the peer pod, TCP and UDP
	udpPort    = 5000 // a UDP server on the peer pod that is not DNS
)

// Server names in greetings, besides ztunnelName's.
const (
	appName    = "app"
	remoteName = "remote"
)

// opTimeout bounds every dial, read and write of the suite.
const opTimeout = 5 * time.Second

// lab is the suite's network: the enrolled pod "app" on node 1, with the
// stand-in ztunnel and an application inside it, and a peer pod on node 2
// with a remote server and a DNS stand-in. Node 1 also owns the probe
// source address, as a node that SNATs kubelet probes does.
//
//	peer 10.200.2.10 ── node2 ══ node1 ── app 10.200.1.10
//	                              (169.254.7.127)
type lab struct {
	topo      *netlab.Topology
	app, peer netlab.Pod
}

var labSeq atomic.Int64

// labBase names every namespace of the suite "redirtest-<pid>-<n>-<role>",
// so that concurrent runs in one process stay apart and a later run can
// recognize a killed one's leftovers.
const labBase = "redirtest"

var staleLab = regexp.MustCompile(`^` + labBase + `-(\d+)-\d+-[a-z0-9]+$`)

func newLab(t *testing.T) *lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	removeStale(t, ctx)

	prefix := fmt.Sprintf("%s-%d-%d", labBase, os.Getpid(), labSeq.Add(1))
	topo, err := netlab.New(ctx, prefix, []netlab.PodSpec{{Name: "app", Node: 1}, {Name: "peer", Node: 2}})
	if err != nil {
		t.Fatalf("build namespaces: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})
	l := &lab{topo: topo, app: topo.Pod("app"), peer: topo.Pod("peer")}

	probe := netip.PrefixFrom(redirect.ProbeSource, 32).String()
	if out, err := exec.CommandContext(ctx, "ip", "-n", topo.Node1.Name, "addr", "add", probe, "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("add probe source to node1: %v: %s", err, bytes.TrimSpace(out))
	}

	srv := &servers{}
	t.Cleanup(srv.Close)
	appNS, peerNS := openNS(t, l.app.NS), openNS(t, l.peer.NS)
	for _, ln := range []struct {
		ns          *netns.NS
		udp         bool
		port        int
		name        string
		transparent bool // as ztunnel's capture listeners
	}{
		{appNS, false, redirect.OutboundPort, ztunnelName(redirect.OutboundPort), true},
		{appNS, false, redirect.InboundPort, ztunnelName(redirect.InboundPort), true},
		{appNS, false, redirect.HBONEPort, ztunnelName(redirect.HBONEPort), false},
		{appNS, false, redirect.DNSPort, ztunnelName(redirect.DNSPort), true},
		{appNS, true, redirect.DNSPort, ztunnelName(redirect.DNSPort), true},
		{appNS, false, appPort, appName, false},
		{peerNS, false, remotePort, remoteName, false},
		{peerNS, false, dnsPort, remoteName, false},
		{peerNS, true, dnsPort, remoteName, false},
		{peerNS, true, udpPort, remoteName, false},
	} {
		var err error
		if ln.udp {
			err = srv.listenUDP(ln.ns, ln.port, ln.name, ln.transparent)
		} else {
			err = srv.listenTCP(ln.ns, ln.port, ln.name, ln.transparent)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func openNS(t *testing.T, ns netlab.Netns) *netns.NS {
	t.Helper()
	h, err := netns.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// removeStale deletes namespaces that runs of this suite killed before
// their cleanup left behind.
func removeStale(t *testing.T, ctx context.Context) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return // none yet
	}
	var stale []string
	for _, e := range entries {
		if netlab.DeadOwner(staleLab, e.Name()) {
			stale = append(stale, e.Name())
		}
	}
	if len(stale) > 0 {
		t.Logf("removing namespaces of killed runs: %s", strings.Join(stale, " "))
		if err := netlab.DeleteNetns(ctx, stale...); err != nil {
			t.Logf("remove stale namespaces: %v", err)
		}
	}
}

// dialOpts says how a client connects.
type dialOpts struct {
	mark  bool       // as ztunnel's own socket
	local netip.Addr // source address, if set
}

// dial connects from inside ns to dst and reads the greeting of whichever
// server answered.
func dial(ctx context.Context, ns netlab.Netns, dst netip.AddrPort, o dialOpts) (*conn, landing, error) {
	h, err := netns.Open(ns.Path())
	if err != nil {
		return nil, landing{}, err
	}
	defer h.Close()
	d := net.Dialer{}
	if o.mark {
		d.Control = markControl
	}
	if o.local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.local.AsSlice()}
	}
	var c net.Conn
	err = h.Do(func() (err error) {
		c, err = d.DialContext(ctx, "tcp4", dst.String())
		return err
	})
	if err != nil {
		return nil, landing{}, fmt.Errorf("dial %s from %s: %w", dst, ns.Name, err)
	}
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	cc := &conn{Conn: c, r: bufio.NewReader(c)}
	ld, err := readLanding(c, cc.r)
	if err != nil {
		c.Close()
		return nil, landing{}, err
	}
	return cc, ld, nil
}

// query sends one UDP datagram from inside ns to dst and returns who
// answered.
func query(ctx context.Context, ns netlab.Netns, dst netip.AddrPort) (landing, error) {
	h, err := netns.Open(ns.Path())
	if err != nil {
		return landing{}, err
	}
	defer h.Close()
	var c net.Conn
	err = h.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "udp4", dst.String())
		return err
	})
	if err != nil {
		return landing{}, fmt.Errorf("dial udp %s from %s: %w", dst, ns.Name, err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte("query")); err != nil {
		return landing{}, fmt.Errorf("send udp to %s: %w", dst, err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return landing{}, fmt.Errorf("udp answer from %s: %w", dst, err)
	}
	return parseLanding(string(buf[:n]))
}

// want is what a check expects of a landing; zero fields are not checked.
type want struct {
	server string
	orig   netip.AddrPort
	client netip.Addr
}

func (w want) check(t *testing.T, what string, got landing) {
	t.Helper()
	switch {
	case got.Server != w.server:
		t.Errorf("%s: landed on %s, want %s", what, got, w.server)
	case w.orig.IsValid() && got.Orig != w.orig:
		t.Errorf("%s: landed on %s, want original destination %s", what, got, w.orig)
	case w.client.IsValid() && got.Client.Addr() != w.client:
		t.Errorf("%s: landed on %s, want client address %s", what, got, w.client)
	}
}

// expectTCP connects and checks where the connection landed; it returns
// the connection, open, for further checks (the test's cleanup closes it).
func expectTCP(t *testing.T, from netlab.Netns, dst netip.AddrPort, o dialOpts, w want) *conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	c, got, err := dial(ctx, from, dst, o)
	if err != nil {
		t.Errorf("connect to %s: %v", dst, err)
		return nil
	}
	t.Cleanup(func() { c.Close() })
	w.check(t, fmt.Sprintf("tcp to %s from %s", dst, from.Name), got)
	return c
}

// expectUDP sends a datagram and checks who answered.
func expectUDP(t *testing.T, from netlab.Netns, dst netip.AddrPort, w want) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	got, err := query(ctx, from, dst)
	if err != nil {
		t.Errorf("udp to %s: %v", dst, err)
		return
	}
	w.check(t, fmt.Sprintf("udp to %s from %s", dst, from.Name), got)
}
