package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/ambient-mesh/mesh/pkg/hbone"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/ztunnel/internal/authz"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// ServerTLS is the TLS configuration of a pod's 15008: the pod's
// certificate, TLS 1.3, ALPN h2, and a client certificate that must chain
// to the mesh roots and carry an identity of the trust domain.
func ServerTLS(cert func() (*tls.Certificate, error), roots func() *x509.CertPool, trustDomain string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert()
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := spiffe.VerifyPeer(raw, roots(), trustDomain)
			return err
		},
	}
}

// PeerIdentity returns the verified identity of a TLS connection's client.
func PeerIdentity(c *tls.Conn) (spiffe.Identity, error) {
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return spiffe.Identity{}, errors.New("no client certificate")
	}
	return spiffe.FromCertificate(certs[0])
}

// Pod is what the handler needs to know of the pod it serves.
type Pod struct {
	IP netip.Addr
	// Namespace and Policies (namespace/name keys) select the
	// authorization policies that apply.
	Namespace string
	Policies  []string
}

// Handler serves tunnels for one pod.
type Handler struct {
	Pod   Pod
	Store *state.Store
	// DialApp connects to the app in the pod (from ztunnel's socket in the
	// pod's network namespace).
	DialApp func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	Log     *slog.Logger
}

// Serve handles one stream from a peer whose identity TLS verified and
// whose connection came from src.
func (h *Handler) Serve(ctx context.Context, s *hbone.Stream, peer spiffe.Identity, src netip.AddrPort) {
	defer s.Close()
	target, err := netip.ParseAddrPort(s.Authority)
	if err != nil {
		h.refuse(s, http.StatusBadRequest, "bad authority", peer, src, s.Authority, err)
		return
	}
	// A pod's 15008 carries tunnels to that pod only; anything else would
	// let a peer use ztunnel to reach other addresses.
	if target.Addr().Unmap() != h.Pod.IP {
		h.refuse(s, http.StatusBadRequest, "authority is not this pod", peer, src, s.Authority, nil)
		return
	}
	d := authz.Decide(h.Store.PoliciesFor(h.Pod.Namespace, h.Pod.Policies), authz.Conn{Source: peer, Src: src, Dst: target})
	if !d.Allow {
		h.refuse(s, http.StatusUnauthorized, d.Reason, peer, src, s.Authority, fmt.Errorf("policy %q", d.Policy))
		return
	}
	app, err := h.DialApp(ctx, target)
	if err != nil {
		h.refuse(s, http.StatusServiceUnavailable, "app unreachable", peer, src, s.Authority, err)
		return
	}
	defer app.Close()
	if err := s.Respond(http.StatusOK); err != nil {
		return
	}
	sent, received := Relay(s, halfClosing(app))
	h.Log.Info("inbound connection closed", "src", src.String(), "src_identity", peer.String(), "dst", s.Authority,
		"policy", d.Policy, "bytes_to_app", sent, "bytes_from_app", received)
}

func (h *Handler) refuse(s *hbone.Stream, status int, reason string, peer spiffe.Identity, src netip.AddrPort, authority string, err error) {
	_ = s.Respond(status)
	h.Log.Warn("inbound connection refused", "status", status, "reason", reason, "src", src.String(),
		"src_identity", peer.String(), "dst", authority, "error", err)
}

// halfCloser is a connection that can end one direction.
type halfCloser interface {
	io.ReadWriter
	CloseWrite() error
}

// halfClosing gives a connection that cannot half-close (not TCP) a
// CloseWrite that closes it whole.
func halfClosing(c net.Conn) halfCloser {
	if hc, ok := c.(halfCloser); ok {
		return hc
	}
	return closeWholly{c}
}

type closeWholly struct{ net.Conn }

func (c closeWholly) CloseWrite() error { return c.Close() }

// Relay copies both ways until both directions end, passing each end of
// stream on as a half-close, and returns the bytes carried a to b and b to a.
func Relay(a, b halfCloser) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB, _ = io.Copy(b, a)
		_ = b.CloseWrite()
	}()
	bToA, _ = io.Copy(a, b)
	_ = a.CloseWrite()
	wg.Wait()
	return aToB, bToA
}
