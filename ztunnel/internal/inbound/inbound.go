package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/pkg/hbone"
	"github.com/ambient-mesh/mesh/pkg/sockio"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
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
func PeerIdentity(st tls.ConnectionState) (spiffe.Identity, error) {
	certs := st.PeerCertificates
	if len(certs) == 0 {
		return spiffe.Identity{}, errors.New("no client certificate")
	}
	return spiffe.FromCertificate(certs[0])
}

// Handler serves tunnels for one pod.
type Handler struct {
	// PodIPs are the pod's addresses: the only authorities its 15008
	// accepts.
	PodIPs []netip.Addr
	// PodName and PodNamespace name the pod as the node agent did. When
	// set, the workload xDS gives for the authority must be this pod: an
	// address the pod holds but xDS gives to another workload is not the
	// pod's to serve under that workload's policies.
	PodName, PodNamespace string
	// Store holds the pod's workload and the policies; a pod that xDS has
	// not described yet takes no tunnels, since its policies are unknown.
	Store *state.Store
	// DialApp connects to the app in the pod (from ztunnel's socket in the
	// pod's network namespace).
	DialApp func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// Track, if set, is told of each relayed tunnel and returns the func
	// to call when it ends; the tracker may Close the stream to cut it.
	Track func(r *Report, c io.Closer) (untrack func())
	// Done is called once per stream, refused or carried, when it ends.
	Done func(Report)
}

// Owns reports whether w, the workload xDS gives for one of the pod's
// addresses, is this pod (always, when the node agent did not name it).
func (h *Handler) Owns(w *workloadapi.Workload) bool {
	return h.PodName == "" || (w.GetName() == h.PodName && w.GetNamespace() == h.PodNamespace)
}

// Report describes one tunnel, for the access log and metrics.
type Report struct {
	Peer      spiffe.Identity
	Src       netip.AddrPort
	Authority string
	// Target is the authority parsed: this pod's address and the port
	// asked for; invalid if the authority was not an address.
	Target netip.AddrPort
	// Workload is the destination workload, nil if unknown.
	Workload *workloadapi.Workload
	// Status is the CONNECT answer: 200, or the refusal.
	Status int
	Reason string
	Policy string
	// DryRun is what the dry-run policies would have decided, if any
	// applies.
	DryRun *authz.Decision
	Err    error
	// Bytes carried to the app and back.
	ToApp, FromApp int64
	Start          time.Time
}

// Serve handles one stream from a peer whose identity TLS verified and
// whose connection came from src.
func (h *Handler) Serve(ctx context.Context, s *hbone.Stream, peer spiffe.Identity, src netip.AddrPort) {
	defer s.Close()
	r := Report{Peer: peer, Src: src, Authority: s.Authority, Start: time.Now()}
	defer func() {
		if h.Done != nil {
			h.Done(r)
		}
	}()
	refuse := func(status int, reason string, err error) {
		r.Status, r.Reason, r.Err = status, reason, err
		_ = s.Respond(status)
	}
	target, err := netip.ParseAddrPort(s.Authority)
	if err != nil {
		refuse(http.StatusBadRequest, "bad authority", err)
		return
	}
	r.Target = target
	// A pod's 15008 carries tunnels to that pod only; anything else would
	// let a peer use ztunnel to reach other addresses.
	if !slices.Contains(h.PodIPs, target.Addr().Unmap()) {
		refuse(http.StatusBadRequest, "authority is not this pod", nil)
		return
	}
	w := h.Store.WorkloadByIP(target.Addr().Unmap())
	if w == nil {
		refuse(http.StatusServiceUnavailable, "destination workload not yet known", nil)
		return
	}
	if !h.Owns(w) {
		refuse(http.StatusBadRequest, "authority is another workload's address", nil)
		return
	}
	r.Workload = w
	d := authz.Decide(h.Store.PoliciesFor(w.GetNamespace(), w.GetAuthorizationPolicies()), authz.Conn{Source: peer, Src: src, Dst: target})
	r.Policy, r.DryRun = d.Policy, d.DryRun
	if !d.Allow {
		refuse(http.StatusUnauthorized, d.Reason, nil)
		return
	}
	app, err := h.DialApp(ctx, target)
	if err != nil {
		refuse(http.StatusServiceUnavailable, "app unreachable", err)
		return
	}
	defer app.Close()
	if err := s.Respond(http.StatusOK); err != nil {
		r.Status, r.Reason, r.Err = http.StatusServiceUnavailable, "peer went away", err
		return
	}
	r.Status, r.Reason = http.StatusOK, d.Reason
	if h.Track != nil {
		defer h.Track(&r, s)()
	}
	r.ToApp, r.FromApp = Relay(s, halfClosing(app))
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
		aToB = copyAdaptive(b, a)
		_ = b.CloseWrite()
	}()
	bToA = copyAdaptive(a, b)
	_ = a.CloseWrite()
	wg.Wait()
	return aToB, bToA
}

// copyAdaptive copies src to dst until EOF or an error. A tunnel copies
// without a buffer of ours: from its receive buffer, or into its frames.
// Between two TCP sockets (passthrough, plaintext inbound), sockio.Copy
// relays small messages without waking the runtime's sysmon and splices
// bulk transfers in the kernel.
func copyAdaptive(dst io.Writer, src io.Reader) int64 {
	if s, ok := src.(*hbone.Stream); ok {
		n, _ := s.WriteTo(dst)
		return n
	}
	if s, ok := dst.(*hbone.Stream); ok {
		n, _ := s.ReadFrom(src)
		return n
	}
	n, _ := sockio.Copy(dst, src)
	return n
}
