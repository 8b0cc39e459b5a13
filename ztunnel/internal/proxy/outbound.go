package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/ambient-mesh/mesh/pkg/hbone"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/inbound"
	"github.com/ambient-mesh/mesh/ztunnel/internal/metrics"
	"github.com/ambient-mesh/mesh/ztunnel/internal/route"
	"github.com/ambient-mesh/mesh/ztunnel/internal/socket"
)

// Envoy-style response flags for connections ztunnel could not carry.
const (
	flagConnect = "CONNECT" // upstream or tunnel could not be opened
	flagNoRoute = "NR"      // destination could not be resolved
	flagDeny    = "DENY"    // refused by policy or peer authentication
)

// outbound carries one connection the pod's app opened, redirected to 15001.
func (pd *pod) outbound(c net.Conn) {
	down := c.(*net.TCPConn)
	defer down.Close()
	_ = down.SetNoDelay(true)
	start := time.Now()
	p := pd.p
	src := down.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst, err := socket.OriginalDst(down)
	if err != nil {
		p.cfg.Log.Warn("outbound: no original destination", "pod", pd.name(), "src", src.String(), "error", err)
		return
	}
	if pd.isOwnListener(dst) {
		// Connected to 15001 itself, not redirected: carrying it would
		// loop back here.
		p.cfg.Log.Warn("outbound: connection addressed to ztunnel itself refused", "pod", pd.name(), "src", src.String(), "dst", dst.String())
		return
	}
	srcW := p.cfg.Store.WorkloadByIP(src.Addr())
	labels := metrics.Labels{Reporter: "source", Source: pd.peerLabels()}
	describe(&labels.Source, srcW)
	rec := accessRecord{dir: "outbound", pod: pd, src: src, dst: dst, start: start}
	t, err := route.Resolve(p.cfg.Store, srcW, dst, rand.IntN)
	if err != nil {
		labels.ResponseFlags = flagNoRoute
		rec.fail(labels, flagNoRoute, err)
		return
	}
	describe(&labels.Destination, t.Workload)
	svc := p.cfg.Store.ServiceByVIP(dst.Addr())
	setService(&labels, svc)
	via := "passthrough"
	if t.HBONE {
		via = "hbone"
		if t.Waypoint {
			via = "waypoint"
		}
		labels.SecurityPolicy = "mutual_tls"
		labels.Destination.Principal = t.Identities[0].String()
	}
	rec.via, rec.target = via, t.Dial

	ctx, cancel := context.WithTimeout(pd.work, p.cfg.ConnectTimeout)
	var up interface {
		io.ReadWriteCloser
		CloseWrite() error
	}
	if t.HBONE {
		key := poolKey{srcIP: src.Addr(), dial: t.Dial, ids: joinIDs(t.Identities)}
		s, err := pd.pool.Open(ctx, key, t.Authority.String(), connectHeader(src, srcW, svc))
		if err == nil {
			up = s
		}
		rec.err = err
	} else {
		tc, err := pd.dial(ctx, t.Dial)
		if err == nil {
			up = tc
		}
		rec.err = err
	}
	cancel()
	if up == nil {
		labels.ResponseFlags = flagConnect
		rec.fail(labels, flagConnect, rec.err)
		return
	}
	defer up.Close()
	info := ConnInfo{Pod: pd.uid, Direction: "outbound", Src: src.String(), Dst: dst.String(),
		SrcIdentity: pd.id.String(), DstIdentity: labels.Destination.Principal, Via: via, Started: start}
	untrack := p.conns.add(info, false, closers{down, up})
	p.opened(labels)
	sent, received := inbound.Relay(down, up)
	untrack()
	// Istio counts from the destination's side on both reporters: sent is
	// the response (up to down), received the request (down to up).
	p.closed(labels, received, sent)
	rec.done(labels, sent, received)
}

// isOwnListener tells whether dst is one of the pod's ztunnel ports.
func (pd *pod) isOwnListener(dst netip.AddrPort) bool {
	switch dst.Port() {
	case OutboundPort, PlaintextPort, HBONEPort:
	default:
		return false
	}
	return dst.Addr().IsLoopback() || dst.Addr().IsUnspecified() || pd.hasIP(dst.Addr())
}

// dialHBONE opens a pooled connection: TCP from the pod's namespace, then
// mutual TLS with the pod's certificate, the peer checked against the
// expected identities and the mesh roots.
func (pd *pod) dialHBONE(ctx context.Context, k poolKey) (net.Conn, error) {
	ids, err := splitIDs(k.ids)
	if err != nil {
		return nil, err
	}
	cert, err := pd.cert(ctx)
	if err != nil {
		return nil, fmt.Errorf("own certificate: %w", err)
	}
	raw, err := pd.dial(ctx, k.dial)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		// The peer is authenticated by its SPIFFE ID below, not by host
		// name; InsecureSkipVerify only turns off the host name check.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert.TLS, nil
		},
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			_, err := spiffe.VerifyPeer(rawCerts, cert.Roots, pd.p.cfg.TrustDomain, ids...)
			return err
		},
	}
	tc, err := hbone.TLSClient(ctx, raw, cfg)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS to %s: %w", k.dial, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		tc.Close()
		return nil, fmt.Errorf("TLS to %s: peer did not agree to h2", k.dial)
	}
	return tc, nil
}

func joinIDs(ids []spiffe.Identity) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ",")
}

func splitIDs(s string) ([]spiffe.Identity, error) {
	var ids []spiffe.Identity
	for part := range strings.SplitSeq(s, ",") {
		id, err := spiffe.Parse(part)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, errors.New("no expected peer identity")
	}
	return ids, nil
}

func workloadName(w *workloadapi.Workload, def string) string {
	if w == nil {
		return def
	}
	if n := w.GetWorkloadName(); n != "" {
		return n
	}
	return w.GetName()
}

// closers closes several things as one.
type closers []interface{ Close() error }

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
