package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ambient-mesh/mesh/pkg/hbone"
	"github.com/ambient-mesh/mesh/ztunnel/internal/authz"
	"github.com/ambient-mesh/mesh/ztunnel/internal/inbound"
	"github.com/ambient-mesh/mesh/ztunnel/internal/metrics"
	"github.com/ambient-mesh/mesh/ztunnel/internal/socket"
)

// handshakeTimeout bounds a peer's TLS handshake on 15008.
const handshakeTimeout = 10 * time.Second

// hbone serves one connection to the pod's 15008.
func (pd *pod) hbone(c net.Conn) {
	p := pd.p
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithTimeout(pd.work, handshakeTimeout)
	tc, err := hbone.TLSServer(ctx, c, pd.tlsServer())
	cancel()
	if err != nil {
		c.Close()
		p.cfg.Log.Warn("inbound: TLS handshake failed", "pod", pd.name(), "src", src.String(), "error", err)
		p.refused(metrics.Labels{Reporter: "destination", SecurityPolicy: "mutual_tls", ResponseFlags: flagDeny, Destination: pd.peerLabels()})
		return
	}
	peer, err := inbound.PeerIdentity(tc.ConnectionState())
	if err != nil {
		tc.Close()
		return
	}
	untrack := p.conns.add(ConnInfo{Pod: pd.uid, Direction: "hbone_server", Src: src.String()}, true, tc)
	defer untrack()
	err = hbone.Serve(pd.ctx, tc, func(s *hbone.Stream) { pd.inbound.Serve(pd.work, s, peer, src) })
	if err != nil {
		p.cfg.Log.Warn("inbound HBONE connection failed", "pod", pd.name(), "src", src.String(), "src_identity", peer.String(), "error", err)
	}
}

// trackTunnel registers a tunnel the handler carries.
func (pd *pod) trackTunnel(r *inbound.Report, c io.Closer) func() {
	info := ConnInfo{Pod: pd.uid, Direction: "inbound", Src: r.Src.String(), Dst: r.Authority,
		SrcIdentity: r.Peer.String(), DstIdentity: pd.id.String(), Started: r.Start}
	untrack := pd.p.conns.add(info, false, c)
	pd.p.opened(pd.inboundLabels(r))
	return untrack
}

// reportInbound logs and counts a tunnel once it has ended.
func (pd *pod) reportInbound(r inbound.Report) {
	l := pd.inboundLabels(&r)
	rec := accessRecord{dir: "inbound", pod: pd, src: r.Src, authority: r.Authority, peer: r.Peer.String(),
		policy: r.Policy, dryRun: r.DryRun, start: r.Start, err: r.Err}
	if r.Status != http.StatusOK {
		flag := flagConnect
		if r.Status == http.StatusUnauthorized {
			flag = flagDeny
		}
		l.ResponseFlags = flag
		rec.reason = r.Reason
		rec.fail(l, flag, r.Err)
		return
	}
	pd.p.closed(l, r.FromApp, r.ToApp)
	rec.done(l, r.FromApp, r.ToApp)
}

func (pd *pod) inboundLabels(r *inbound.Report) metrics.Labels {
	store := pd.p.cfg.Store
	l := metrics.Labels{Reporter: "destination", Destination: pd.peerLabels(), SecurityPolicy: "mutual_tls"}
	describe(&l.Source, store.WorkloadByIP(r.Src.Addr()))
	// The peer's certificate, not its address, says who it is.
	l.Source.Namespace, l.Source.Principal = r.Peer.Namespace, r.Peer.String()
	if r.Workload != nil {
		describe(&l.Destination, r.Workload)
		setService(&l, inboundService(store, r.Workload, r.Target.Port()))
	}
	return l
}

// plaintext serves one connection redirected to 15006: a client outside
// the mesh, or one whose node runs no ztunnel. PeerAuthentication decides:
// under STRICT, istiod sends a policy denying connections without a
// principal, so these are refused by the same authorization as any other.
func (pd *pod) plaintext(c net.Conn) {
	down := c.(*net.TCPConn)
	defer down.Close()
	p := pd.p
	start := time.Now()
	src := down.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst, err := socket.OriginalDst(down)
	rec := accessRecord{dir: "inbound_plaintext", pod: pd, src: src, dst: dst, start: start}
	// Without a peer identity the source is known only by its address.
	l := metrics.Labels{Reporter: "destination", Destination: pd.peerLabels(), SecurityPolicy: "unknown"}
	describe(&l.Source, p.cfg.Store.WorkloadByIP(src.Addr()))
	if err != nil || pd.isOwnListener(dst) || !pd.hasIP(dst.Addr()) {
		// Only connections to the pod's own address are the pod's to take.
		rec.reason = "destination is not this pod"
		l.ResponseFlags = flagDeny
		rec.fail(l, flagDeny, err)
		return
	}
	w := p.cfg.Store.WorkloadByIP(dst.Addr())
	if w == nil {
		rec.reason = "destination workload not yet known"
		l.ResponseFlags = flagDeny
		rec.fail(l, flagDeny, nil)
		return
	}
	if !pd.inbound.Owns(w) {
		// As on 15008: not this pod's to serve under another's policies.
		rec.reason = "destination is another workload's address"
		l.ResponseFlags = flagDeny
		rec.fail(l, flagDeny, nil)
		return
	}
	describe(&l.Destination, w)
	setService(&l, inboundService(p.cfg.Store, w, dst.Port()))
	d := authz.Decide(p.cfg.Store.PoliciesFor(w.GetNamespace(), w.GetAuthorizationPolicies()), authz.Conn{Src: src, Dst: dst})
	rec.policy, rec.dryRun = d.Policy, d.DryRun
	if !d.Allow {
		rec.reason = d.Reason
		l.ResponseFlags = flagDeny
		rec.fail(l, flagDeny, nil)
		return
	}
	ctx, cancel := context.WithTimeout(pd.work, p.cfg.ConnectTimeout)
	app, err := pd.dial(ctx, dst)
	cancel()
	if err != nil {
		rec.reason = "app unreachable"
		l.ResponseFlags = flagConnect
		rec.fail(l, flagConnect, err)
		return
	}
	defer app.Close()
	untrack := p.conns.add(ConnInfo{Pod: pd.uid, Direction: "inbound_plaintext", Src: src.String(), Dst: dst.String(),
		DstIdentity: pd.id.String(), Started: start}, false, closers{down, app})
	p.opened(l)
	toApp, fromApp := inbound.Relay(down, app)
	untrack()
	p.closed(l, fromApp, toApp)
	rec.done(l, fromApp, toApp)
}
