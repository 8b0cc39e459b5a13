package ztunnel_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/tests/controlplane"
	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// TestWrongPeerIdentityIsRefused points the client at a pod that xDS says
// runs as sa/server but whose 15008 is the test's own HBONE server: with a
// mesh certificate for another identity, or a certificate for the right
// identity from another root, ztunnel refuses it before sending a single
// request. With a genuine certificate for sa/server the same server is
// reached, so the refusals are the identity checks and nothing else.
func TestWrongPeerIdentityIsRefused(t *testing.T) {
	m := newMesh(t, []meshlab.PodSpec{
		{Name: "client", Node: 1, Mesh: true},
		{Name: "impostor", Node: 2},
	})
	w := m.Workload("impostor")
	w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	w.ServiceAccount = "server"
	m.CP.SetWorkload(w)
	waitAcked(t, m, 10*time.Second)
	expected := fmt.Sprintf("spiffe://%s/ns/default/sa/server", meshlab.TrustDomain)
	wrong := fmt.Sprintf("spiffe://%s/ns/default/sa/impostor", meshlab.TrustDomain)

	otherRoot, err := controlplane.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	imp := startHBONEServer(t, m, "impostor", leafFrom(t, m.Authority, wrong))
	target := addr(m, "impostor", 8080)

	// A mesh certificate, but for the wrong identity.
	expectRefused(t, m, "client", target)
	line := waitLog(t, m, 1, "connection refused", wrong)
	if !strings.Contains(line, "not allowed") || !strings.Contains(line, expected) {
		t.Errorf("refusal does not say %s is not the expected %s:\n%s", wrong, expected, line)
	}
	if imp.hellos.Load() == 0 {
		t.Fatal("ztunnel never reached the impostor's 15008: the refusal proves nothing")
	}
	if n := imp.requests.Load(); n != 0 {
		t.Fatalf("the impostor received %d CONNECT requests", n)
	}

	// The expected identity, but not from the mesh's CA.
	imp.cert.Store(leafFrom(t, otherRoot, expected))
	hellos := imp.hellos.Load()
	expectRefused(t, m, "client", target)
	waitLog(t, m, 1, "connection refused", "unknown authority")
	if imp.hellos.Load() == hellos {
		t.Fatal("ztunnel did not try the impostor again")
	}
	if n := imp.requests.Load(); n != 0 {
		t.Fatalf("the impostor received %d CONNECT requests", n)
	}

	// Control: the same server with a genuine certificate is reached.
	imp.cert.Store(leafFrom(t, m.Authority, expected))
	if greeting := mustExchange(t, m, "client", target, "hello\n"); greeting != "from hbone server" {
		t.Fatalf("greeting %q", greeting)
	}
	if n := imp.requests.Load(); n != 1 {
		t.Fatalf("the server received %d CONNECT requests, want 1", n)
	}
}

// leafFrom issues a certificate for a SPIFFE identity from authority.
func leafFrom(t *testing.T, authority *controlplane.Authority, identity string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := authority.Sign(&key.PublicKey, []string{identity}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// hboneServer is an HBONE endpoint of the test's own on a pod's 15008:
// TLS with whatever certificate it is given, HTTP/2 CONNECT answered with a
// greeting and an echo.
type hboneServer struct {
	cert     atomic.Pointer[tls.Certificate]
	hellos   atomic.Int32 // TLS ClientHellos
	requests atomic.Int32 // CONNECT requests
}

func startHBONEServer(t *testing.T, m *meshlab.Mesh, pod string, cert *tls.Certificate) *hboneServer {
	t.Helper()
	s := &hboneServer{}
	s.cert.Store(cert)
	ln, err := meshlab.Listen(m.Topo.Pod(pod).NS, addr(m, pod, 15008))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.hellos.Add(1)
			return s.cert.Load(), nil
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
		fl := w.(http.Flusher)
		_, _ = io.WriteString(w, "from hbone server\n")
		fl.Flush()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				fl.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	// Refused handshakes are expected: no need to log them.
	srv := &http.Server{Handler: handler, TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0)}
	t.Cleanup(func() { srv.Close() })
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return s
}
