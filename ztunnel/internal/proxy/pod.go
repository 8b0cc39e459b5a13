package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/pkg/hbone"
	"github.com/ambient-mesh/mesh/pkg/netns"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/zdsapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/ca"
	"github.com/ambient-mesh/mesh/ztunnel/internal/inbound"
	"github.com/ambient-mesh/mesh/ztunnel/internal/socket"
)

// pod is one served pod: its namespace, listeners, outbound pool and
// connections.
type pod struct {
	p    *Proxy
	uid  string
	info *zdsapi.WorkloadInfo
	id   spiffe.Identity
	ns   *netns.NS
	ino  uint64
	ips  []netip.Addr

	// ctx ends when the pod is removed: its HBONE servers then send
	// GOAWAY and take no new tunnels. work ends when the pod's drain does:
	// what was accepted before (handshakes, dials to the app or the peer,
	// the certificate they wait for) runs on until then, so a connection
	// taken just before a ztunnel upgrade is served, not cut.
	ctx    context.Context
	cancel context.CancelFunc
	work   context.Context
	cut    context.CancelFunc

	listeners []net.Listener
	pool      *hbone.Pool[poolKey]
	inbound   *inbound.Handler
	serving   sync.WaitGroup // accept loops
	handling  sync.WaitGroup // accepted connections, from accept to their end
}

// poolKey is what an HBONE connection may be shared by: Istio's {source
// identity, destination identity, source IP, destination IP}. The
// destination identity is the set the peer is checked against, and the
// source identity is the pod's, so it is implied by the pool being the
// pod's own.
type poolKey struct {
	srcIP netip.Addr
	dial  netip.AddrPort
	ids   string // expected peer identities, comma-joined
}

func (pd *pod) name() string { return podName(pd.info) }

// startPod enters the pod's namespace, learns its addresses, makes sure its
// certificate is there (or, unless needCert, that it is being fetched), and
// opens its listeners.
func (p *Proxy) startPod(ctx context.Context, uid string, info *zdsapi.WorkloadInfo, nsFile *os.File, needCert bool) (_ *pod, err error) {
	if nsFile == nil {
		return nil, errors.New("add without a network namespace")
	}
	ns, err := netns.FromFile(nsFile)
	if err != nil {
		return nil, err
	}
	pd := &pod{p: p, uid: uid, info: info, ns: ns}
	pd.ctx, pd.cancel = context.WithCancel(context.Background())
	pd.work, pd.cut = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			pd.closeListeners()
			pd.cancel()
			pd.cut()
			ns.Close()
		}
	}()
	if pd.ino, err = ns.Inode(); err != nil {
		return nil, err
	}
	sa := info.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	pd.id, err = spiffe.Parse(spiffe.Identity{TrustDomain: p.cfg.TrustDomain, Namespace: info.GetNamespace(), ServiceAccount: sa}.String())
	if err != nil {
		return nil, fmt.Errorf("pod identity: %w", err)
	}
	if pd.ips, err = pd.addresses(); err != nil {
		return nil, err
	}
	// The first pod of an identity fetches its certificate: without one
	// the pod could neither take nor open tunnels, so a new pod must not
	// start. A running one is served meanwhile (plaintext and passthrough
	// work) while the certificate manager keeps trying.
	wait := p.cfg.CertTimeout
	if !needCert {
		// Keep a snapshot of many pods quick when the CA is away; the
		// fetch goes on in the background.
		wait = min(wait, time.Second)
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	_, err = p.cfg.Certs.Get(cctx, pd.id)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = fmt.Errorf("no certificate from the CA within %s", wait)
	}
	if err != nil {
		if needCert {
			return nil, fmt.Errorf("certificate for %s: %w", pd.id, err)
		}
		p.cfg.Log.Warn("running pod served without a certificate yet; its tunnels fail until one is issued",
			"uid", uid, "pod", podName(info), "identity", pd.id.String(), "error", err)
		err = nil
	}
	pd.inbound = &inbound.Handler{
		PodIPs:       pd.ips,
		PodName:      info.GetName(),
		PodNamespace: info.GetNamespace(),
		Store:        p.cfg.Store,
		DialApp:      func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) { return pd.dial(ctx, addr) },
		Track:        pd.trackTunnel,
		Done:         pd.reportInbound,
	}
	pd.pool = &hbone.Pool[poolKey]{Dial: pd.dialHBONE, MaxStreamsPerConn: p.cfg.MaxStreamsPerConn}
	if err := pd.listen(); err != nil {
		return nil, err
	}
	return pd, nil
}

// addresses reads the pod's IPs from inside its namespace, as the CNI
// plugin configured them before the pod was handed over.
func (pd *pod) addresses() ([]netip.Addr, error) {
	var ips []netip.Addr
	err := pd.ns.Do(func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr().Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || !ip.Is4() {
				continue
			}
			ips = append(ips, ip)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pod addresses: %w", err)
	}
	if len(ips) == 0 {
		return nil, errors.New("pod has no IPv4 address")
	}
	return ips, nil
}

// listen opens the three listeners inside the pod's namespace.
func (pd *pod) listen() error {
	type spec struct {
		port      int
		transport bool
		serve     func(net.Conn)
	}
	specs := []spec{
		{OutboundPort, true, pd.outbound},
		{PlaintextPort, true, pd.plaintext},
		{HBONEPort, false, pd.hbone},
	}
	err := pd.ns.Do(func() error {
		for _, s := range specs {
			lc := net.ListenConfig{Control: socket.InPodListenerControl(s.transport)}
			// IPv4 only for now: SO_ORIGINAL_DST is read at the IPv4 level.
			ln, err := lc.Listen(context.Background(), "tcp4", fmt.Sprintf("0.0.0.0:%d", s.port))
			if err != nil {
				return err
			}
			pd.listeners = append(pd.listeners, ln)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listen in pod netns: %w", err)
	}
	for i, s := range specs {
		ln := pd.listeners[i]
		pd.serving.Add(1)
		go pd.accept(ln, s.serve)
	}
	return nil
}

func (pd *pod) accept(ln net.Listener, serve func(net.Conn)) {
	defer pd.serving.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				pd.p.cfg.Log.Error("accept failed; listener closed", "pod", pd.name(), "addr", ln.Addr().String(), "error", err)
			}
			return
		}
		pd.handling.Add(1)
		go func() {
			defer pd.handling.Done()
			serve(c)
		}()
	}
}

// dial connects from inside the pod's namespace with ztunnel's mark, so the
// pod's address is the source and the pod's redirection lets it pass.
func (pd *pod) dial(ctx context.Context, addr netip.AddrPort) (*net.TCPConn, error) {
	var c net.Conn
	err := pd.ns.Do(func() error {
		d := net.Dialer{Control: socket.MarkControl}
		var err error
		c, err = d.DialContext(ctx, "tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return tc, nil
}

// cert returns the pod's current certificate.
func (pd *pod) cert(ctx context.Context) (*ca.Certificate, error) {
	return pd.p.cfg.Certs.Get(ctx, pd.id)
}

func (pd *pod) hasIP(ip netip.Addr) bool {
	for _, a := range pd.ips {
		if a == ip.Unmap() {
			return true
		}
	}
	return false
}

// sameNetns tells whether f is the namespace the pod is served in.
func (pd *pod) sameNetns(f *os.File) bool {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return st.Ino == pd.ino
}

// tlsServer is the configuration of the pod's 15008: the pod's current
// certificate, and its CA's roots for the peer's chain. With no certificate
// the handshake fails: the pod takes no tunnels rather than an unverified
// one.
func (pd *pod) tlsServer() *tls.Config {
	get := func() (*ca.Certificate, error) {
		ctx, cancel := context.WithTimeout(pd.work, pd.p.cfg.ConnectTimeout)
		defer cancel()
		return pd.cert(ctx)
	}
	return inbound.ServerTLS(
		func() (*tls.Certificate, error) {
			c, err := get()
			if err != nil {
				return nil, err
			}
			return &c.TLS, nil
		},
		func() *x509.CertPool {
			c, err := get()
			if err != nil {
				return x509.NewCertPool()
			}
			return c.Roots
		},
		pd.p.cfg.TrustDomain)
}

func (pd *pod) closeListeners() {
	for _, ln := range pd.listeners {
		ln.Close()
	}
}

// drain waits for the pod's connections to end, up to timeout, then cuts
// the rest and releases the pod.
func (pd *pod) drain(timeout time.Duration) {
	pd.cancel() // GOAWAY on inbound HBONE connections, no new tunnels
	pd.serving.Wait()
	// Every accepted connection counts, also one still being set up (a
	// handshake, a dial): it was taken before the listeners closed, and
	// is served.
	handled := make(chan struct{})
	go func() { pd.handling.Wait(); close(handled) }()
	deadline := time.NewTimer(timeout)
	select {
	case <-handled:
	case <-deadline.C:
		n := pd.p.conns.closePod(pd.uid)
		pd.p.cfg.Log.Warn("drain timed out; connections cut", "pod", pd.name(), "connections", n)
	}
	deadline.Stop()
	pd.cut() // handshakes and dials still under way give up
	pd.pool.Close()
	pd.ns.Close()
}
