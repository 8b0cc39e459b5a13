package redirecttest

import (
	"net/netip"
	"os"
	"testing"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

// Run checks newMode's redirection against the reference behaviour of
// package redirect. It builds its own namespaces, applies the mode to one
// pod, and runs one subtest per behaviour, in this order:
//
//   - ApplyIsIdempotent: a second Apply of the same config succeeds;
//   - Outbound: the pod's TCP to a remote, or to an address where nothing
//     answers, lands on 15001, which recovers it as the original
//     destination;
//   - ZtunnelHandoff: connections queued on a listener that closes move to
//     the other listener of its SO_REUSEPORT group (a ztunnel handover);
//   - OutboundMarkedBypasses: with ztunnel's mark it reaches the remote;
//   - OutboundToLoopback, OutboundToOwnIP: the pod's TCP to 127.0.0.1 and
//     to its own address reaches its application;
//   - Inbound: TCP from a peer pod, or from the node, to the pod's
//     application lands on 15006, with the application's address as the
//     original destination and the client as the source;
//   - InboundHBONE: a peer's TCP to 15008 reaches ztunnel's 15008 directly;
//   - InboundFromProbeSource: TCP from 169.254.7.127 reaches the application;
//   - ZtunnelToApp: ztunnel's marked connection to the application (its
//     inbound path) reaches it;
//   - DNSNotCaptured: without DNSCapture, UDP to port 53 reaches the remote
//     and TCP to port 53 is ordinary outbound (15001);
//   - EstablishedSurviveReapply: connections through 15001 and 15006 keep
//     carrying data across an Apply with another config;
//   - DNSCaptured: with DNSCapture, UDP and TCP to port 53 land on 15053,
//     while other UDP is untouched and other TCP still lands on 15001;
//   - Remove: afterwards the pod reaches the remote, and the peer the
//     application, directly;
//   - RemoveAgain, RemoveUntouched, RemoveMissing: Remove on a namespace
//     with no redirection, or on a path that does not exist, is no error.
//
// newMode is called once. The suite needs root; without it, it skips.
// Everything it creates is removed when the test ends, failed or not.
func Run(t *testing.T, newMode func(t *testing.T) redirect.Mode) {
	if os.Geteuid() != 0 {
		t.Skip("redirecttest needs root: it creates network namespaces")
	}
	l := newLab(t)
	mode := newMode(t)
	app, peer := l.app, l.peer
	appPath := app.NS.Path()

	cfg := redirect.Config{PodIPs: []netip.Addr{app.IP}}
	if err := mode.Apply(appPath, cfg); err != nil {
		t.Fatalf("%s: apply: %v", mode.Name(), err)
	}
	t.Cleanup(func() {
		if err := mode.Remove(appPath); err != nil {
			t.Errorf("%s: remove at cleanup: %v", mode.Name(), err)
		}
	})

	at := netip.AddrPortFrom
	remote := at(peer.IP, remotePort)
	remoteDNS := at(peer.IP, dnsPort)
	appAddr := at(app.IP, appPort)
	outbound := ztunnelName(redirect.OutboundPort)
	inbound := ztunnelName(redirect.InboundPort)
	hbone := ztunnelName(redirect.HBONEPort)
	dns := ztunnelName(redirect.DNSPort)

	t.Run("ApplyIsIdempotent", func(t *testing.T) {
		if err := mode.Apply(appPath, cfg); err != nil {
			t.Fatalf("second apply: %v", err)
		}
		expectTCP(t, app.NS, remote, dialOpts{}, want{server: outbound, orig: remote})
	})
	t.Run("ZtunnelHandoff", func(t *testing.T) {
		expectHandoff(t, openNS(t, app.NS))
	})
	t.Run("Outbound", func(t *testing.T) {
		expectTCP(t, app.NS, remote, dialOpts{}, want{server: outbound, orig: remote, client: app.IP})
		// ztunnel answers for destinations that do not exist, too.
		nowhere := at(netip.MustParseAddr("10.200.2.250"), 1234)
		expectTCP(t, app.NS, nowhere, dialOpts{}, want{server: outbound, orig: nowhere, client: app.IP})
	})
	t.Run("OutboundMarkedBypasses", func(t *testing.T) {
		expectTCP(t, app.NS, remote, dialOpts{mark: true}, want{server: remoteName, orig: remote, client: app.IP})
	})
	t.Run("OutboundToLoopback", func(t *testing.T) {
		lo := at(netip.MustParseAddr("127.0.0.1"), appPort)
		expectTCP(t, app.NS, lo, dialOpts{}, want{server: appName, orig: lo})
	})
	t.Run("OutboundToOwnIP", func(t *testing.T) {
		expectTCP(t, app.NS, appAddr, dialOpts{}, want{server: appName, orig: appAddr, client: app.IP})
	})
	t.Run("Inbound", func(t *testing.T) {
		expectTCP(t, peer.NS, appAddr, dialOpts{}, want{server: inbound, orig: appAddr, client: peer.IP})
		// The node itself, other than through the probe address, is a
		// peer like any other.
		expectTCP(t, l.topo.Node1, appAddr, dialOpts{}, want{server: inbound, orig: appAddr, client: app.Gateway})
	})
	t.Run("InboundHBONE", func(t *testing.T) {
		dst := at(app.IP, redirect.HBONEPort)
		expectTCP(t, peer.NS, dst, dialOpts{}, want{server: hbone, orig: dst, client: peer.IP})
	})
	t.Run("InboundFromProbeSource", func(t *testing.T) {
		o := dialOpts{local: redirect.ProbeSource}
		expectTCP(t, l.topo.Node1, appAddr, o, want{server: appName, orig: appAddr, client: redirect.ProbeSource})
	})
	t.Run("ZtunnelToApp", func(t *testing.T) {
		expectTCP(t, app.NS, appAddr, dialOpts{mark: true}, want{server: appName, orig: appAddr, client: app.IP})
	})
	t.Run("DNSNotCaptured", func(t *testing.T) {
		expectUDP(t, app.NS, remoteDNS, want{server: remoteName, client: app.IP})
		expectTCP(t, app.NS, remoteDNS, dialOpts{}, want{server: outbound, orig: remoteDNS})
	})

	dnsCfg := cfg
	dnsCfg.DNSCapture = true
	t.Run("EstablishedSurviveReapply", func(t *testing.T) {
		out := expectTCP(t, app.NS, remote, dialOpts{}, want{server: outbound})
		in := expectTCP(t, peer.NS, appAddr, dialOpts{}, want{server: inbound})
		if err := mode.Apply(appPath, dnsCfg); err != nil {
			t.Fatalf("apply with DNS capture: %v", err)
		}
		if out != nil {
			if err := out.echo("outbound"); err != nil {
				t.Errorf("outbound connection after re-apply: %v", err)
			}
		}
		if in != nil {
			if err := in.echo("inbound"); err != nil {
				t.Errorf("inbound connection after re-apply: %v", err)
			}
		}
	})
	t.Run("DNSCaptured", func(t *testing.T) {
		// The previous subtest applies dnsCfg; apply it again so that this
		// one holds on its own.
		if err := mode.Apply(appPath, dnsCfg); err != nil {
			t.Fatalf("apply with DNS capture: %v", err)
		}
		expectUDP(t, app.NS, remoteDNS, want{server: dns, client: app.IP})
		expectUDP(t, app.NS, at(peer.IP, udpPort), want{server: remoteName, client: app.IP})
		expectTCP(t, app.NS, remoteDNS, dialOpts{}, want{server: dns, orig: remoteDNS, client: app.IP})
		expectTCP(t, app.NS, remote, dialOpts{}, want{server: outbound, orig: remote})
		expectTCP(t, peer.NS, appAddr, dialOpts{}, want{server: inbound, orig: appAddr})
	})

	t.Run("Remove", func(t *testing.T) {
		if err := mode.Remove(appPath); err != nil {
			t.Fatalf("remove: %v", err)
		}
		expectTCP(t, app.NS, remote, dialOpts{}, want{server: remoteName, orig: remote, client: app.IP})
		expectTCP(t, peer.NS, appAddr, dialOpts{}, want{server: appName, orig: appAddr, client: peer.IP})
		expectUDP(t, app.NS, remoteDNS, want{server: remoteName, client: app.IP})
	})
	t.Run("RemoveAgain", func(t *testing.T) {
		if err := mode.Remove(appPath); err != nil {
			t.Errorf("second remove: %v", err)
		}
	})
	t.Run("RemoveUntouched", func(t *testing.T) {
		if err := mode.Remove(peer.NS.Path()); err != nil {
			t.Errorf("remove from a namespace never applied to: %v", err)
		}
	})
	t.Run("RemoveMissing", func(t *testing.T) {
		if err := mode.Remove(netlab.Netns{Name: l.topo.Prefix + "-missing"}.Path()); err != nil {
			t.Errorf("remove from a namespace that does not exist: %v", err)
		}
	})
}
