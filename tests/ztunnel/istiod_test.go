package ztunnel_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// TestIstiodOutageKeepsTrafficFlowing stops the control plane: open
// connections keep echoing, new ones between known workloads (over a new
// mutual TLS connection too) still work from the last good state and the
// cached certificates, and ztunnel stays ready. When the control plane is
// back, the ztunnels reconnect and a policy pushed then takes effect.
func TestIstiodOutageKeepsTrafficFlowing(t *testing.T) {
	m := newMesh(t, []meshlab.PodSpec{
		{Name: "client", Node: 1, Mesh: true},
		{Name: "server", Node: 2, Mesh: true},
		{Name: "server2", Node: 2, Mesh: true},
	})
	startApp(t, m, "server", 8080)
	startApp(t, m, "server", 9090)
	startApp(t, m, "server2", 8080)
	long := openEcho(t, m, "client", addr(m, "server", 8080))

	ended := func(n int) int { return len(logLines(m, n, "xds stream ended")) }
	before := [2]int{ended(1), ended(2)}
	m.CP.Stop()
	for n := 1; n <= 2; n++ {
		waitFor(t, 5*time.Second, fmt.Sprintf("node%d notices the control plane is gone", n), func() error {
			if ended(n) == before[n-1] {
				return fmt.Errorf("no new %q line", "xds stream ended")
			}
			return nil
		})
	}

	long.mustPing(t, "control plane down")
	mustExchange(t, m, "client", addr(m, "server", 8080), "istiod is away\n")
	// server2 was never reached: this needs a new HBONE connection, so both
	// ztunnels' cached certificates, and server2's workload from the last
	// good state.
	mustExchange(t, m, "client", addr(m, "server2", 8080), "istiod is away\n")
	mustExchange(t, m, "client", addr(m, "server", 9090), "istiod is away\n")
	expectReady(t, m, 1)
	expectReady(t, m, 2)
	if n := m.CP.Connected(); n != 0 {
		t.Fatalf("%d ADS streams while the control plane is stopped", n)
	}

	if err := m.CP.Start(m.ControlPlaneSocket()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	push(t, m) // nothing new: wait for both to resubscribe and ACK
	t.Logf("both ztunnels resynced %s after the control plane came back", time.Since(start).Round(time.Millisecond))
	m.CP.SetAuthorization(policy("deny-9090", security.Scope_NAMESPACE, security.Action_DENY,
		&security.Match{DestinationPorts: []uint32{9090}}))
	waitAcked(t, m, 40*time.Second)
	expectRefused(t, m, "client", addr(m, "server", 9090))
	mustExchange(t, m, "client", addr(m, "server", 8080), "istiod is back\n")
	long.mustPing(t, "control plane back")
}

// TestCertificatesRotateWithoutDroppingConnections has the CA issue 4s
// certificates: the ztunnels renew them at half-life, a connection keeps
// echoing across the rotations, new connections (and new mutual TLS
// handshakes) work after them with the new certificates, and the config
// dump shows the new serials and never a private key.
func TestCertificatesRotateWithoutDroppingConnections(t *testing.T) {
	const ttl = 4 * time.Second
	m := newMeshWith(t, meshlab.Options{CATTL: ttl, Pods: []meshlab.PodSpec{
		{Name: "client", Node: 1, Mesh: true},
		{Name: "client2", Node: 1, Mesh: true},
		{Name: "server", Node: 2, Mesh: true},
	}})
	startApp(t, m, "server", 8080)
	target := addr(m, "server", 8080)
	d1, _ := configDump(t, m, 1)
	d2, _ := configDump(t, m, 2)
	firstClient, firstServer := d1.serial(m.Identity("client")), d2.serial(m.Identity("server"))
	if firstClient == "" || firstServer == "" {
		t.Fatalf("no certificate in the dumps: client %q, server %q", d1.Certificates, d2.Certificates)
	}
	issued := func(pod string) int { return m.CP.Issued(m.Identity(pod)) }
	baseClient, baseServer := issued("client"), issued("server")

	long := openEcho(t, m, "client", target)
	start := time.Now()
	deadline := start.Add(6 * ttl)
	for issued("client") < baseClient+2 || issued("server") < baseServer+2 {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d new certificates for client, %d for server; want 2 each (renewal at half-life of %s)",
				time.Since(start).Round(time.Millisecond), issued("client")-baseClient, issued("server")-baseServer, ttl)
		}
		long.mustPing(t, "during rotation")
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	t.Logf("two rotations in %s, %d pings", elapsed.Round(time.Millisecond), long.n)
	// At half-life, about one renewal per ttl/2: not a storm of them.
	if most := int(elapsed/(ttl/4)) + 2; issued("client")-baseClient > most || issued("server")-baseServer > most {
		t.Fatalf("in %s: %d new certificates for client, %d for server; want at most %d at half-life of %s",
			elapsed.Round(time.Millisecond), issued("client")-baseClient, issued("server")-baseServer, most, ttl)
	}

	// New connections: on the pooled HBONE connection, and on a new one
	// from a pod that had not talked yet.
	mustExchange(t, m, "client", target, "after rotation\n")
	mustExchange(t, m, "client2", target, "after rotation, new handshake\n")

	d1, raw1 := configDump(t, m, 1)
	d2, raw2 := configDump(t, m, 2)
	for _, raw := range []string{raw1, raw2} {
		if strings.Contains(raw, "PRIVATE KEY") {
			t.Fatal("the config dump holds a private key")
		}
	}
	now := time.Now()
	for _, c := range append(d1.Certificates, d2.Certificates...) {
		if !c.NotAfter.After(now) || len(c.Chain) == 0 || !strings.Contains(c.Chain[0], "BEGIN CERTIFICATE") {
			t.Errorf("certificate of %s in the dump: not after %s, chain of %d", c.Identity, c.NotAfter, len(c.Chain))
		}
	}
	if s := d1.serial(m.Identity("client")); s == "" || s == firstClient {
		t.Errorf("client's serial %q after rotation, first %q", s, firstClient)
	}
	serverSerial := d2.serial(m.Identity("server"))
	if serverSerial == "" || serverSerial == firstServer {
		t.Errorf("server's serial %q after rotation, first %q", serverSerial, firstServer)
	}

	// What the server's 15008 presents to a new peer now: a certificate
	// valid now, not the first one.
	peer := fmt.Sprintf("spiffe://%s/ns/default/sa/probe", meshlab.TrustDomain)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, // checked below, against the root
		Certificates:       []tls.Certificate{*leafFrom(t, m.Authority, peer)},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := meshlab.Dial(ctx, m.Topo.Node(1), addr(m, "server", 15008))
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, cfg)
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS to the server's 15008: %v", err)
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	if serial := leaf.SerialNumber.Text(16); serial == firstServer {
		t.Errorf("the server's 15008 still presents its first certificate %s", serial)
	}
	if !time.Now().Before(leaf.NotAfter) {
		t.Errorf("the server's 15008 presents a certificate that expired at %s", leaf.NotAfter)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != m.Identity("server") {
		t.Errorf("the server's 15008 presents %v", leaf.URIs)
	}
	long.mustPing(t, "after rotation")
}
