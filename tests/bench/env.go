package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
)

// serverPort is where the server pod's server listens.
const serverPort = 5201

// firstProxyPort is where paths' proxy ports start; every hop gets its own
// so that all paths can be up at once.
const firstProxyPort = 15100

// SPIFFE identities of the two proxy hops of a TLS path.
const (
	Node1ProxyID = "spiffe://cluster.local/ns/netbench/sa/node1-proxy"
	Node2ProxyID = "spiffe://cluster.local/ns/netbench/sa/node2-proxy"
)

// Env is the scene every path runs in: the topology, a throwaway CA, and
// the server in the server pod. Paths add their proxies to it.
type Env struct {
	Topo *Topology
	PKI  *PKI
	// Server is the server process; its connection reports tell what
	// crossed a path and from which source address.
	Server *Proc
	// ServerAddr is the server pod's address: what the client dials on
	// the direct path, and the final target of every other.
	ServerAddr netip.AddrPort

	log        *slog.Logger
	exe        string
	nextPort   atomic.Uint32
	ztunnelEnv []string
}

// EnvOptions configure NewEnv.
type EnvOptions struct {
	// Prefix names every namespace the run creates; DefaultPrefix if empty.
	Prefix string
	Log    *slog.Logger
	// ZtunnelEnv is added to the ztunnels' environment (KEY=VALUE).
	ZtunnelEnv []string
}

// NewEnv builds the topology, the CA and the server. Close undoes it all,
// and NewEnv undoes its own partial work on error.
func NewEnv(ctx context.Context, opts EnvOptions) (_ *Env, err error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	e := &Env{log: opts.Log, exe: exe, ztunnelEnv: opts.ZtunnelEnv}
	e.nextPort.Store(firstProxyPort)
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()

	e.log.Info("creating topology", "prefix", opts.Prefix)
	if e.Topo, err = NewTopology(ctx, opts.Prefix); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", opts.Prefix+"-pki-")
	if err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	e.PKI = &PKI{Dir: dir} // so that Close removes dir if newPKI fails
	pki, err := newPKI(dir, Node1ProxyID, Node2ProxyID)
	if err != nil {
		return nil, err
	}
	e.PKI = pki
	e.ServerAddr = netip.AddrPortFrom(e.Topo.ServerIP, serverPort)
	if e.Server, err = e.startChild(ctx, e.Topo.ServerPod, "server", roleServer, "-listen", e.ServerAddr.String()); err != nil {
		return nil, err
	}
	return e, nil
}

// Close stops the server, deletes the topology and the CA files.
func (e *Env) Close() error {
	var errs []error
	if e.Server != nil {
		errs = append(errs, e.Server.Stop())
		e.Server = nil
	}
	if e.Topo != nil {
		errs = append(errs, e.Topo.Close())
		e.Topo = nil
	}
	if e.PKI != nil {
		errs = append(errs, os.RemoveAll(e.PKI.Dir))
		e.PKI = nil
	}
	return errors.Join(errs...)
}

// Port hands out a port no other hop of this run uses.
func (e *Env) Port() uint16 { return uint16(e.nextPort.Add(1) - 1) }

// startChild starts one of the harness's child roles in ns and waits until
// it is ready.
func (e *Env) startChild(ctx context.Context, ns Netns, name, role string, args ...string) (*Proc, error) {
	e.log.Debug("starting child", "name", name, "role", role, "netns", ns.Name, "args", args)
	return startProc(ctx, e.exe, ns, name, role, args, nil)
}

// RunClient runs one measurement from the client pod against addr and
// returns the client's figures. onMark, if not nil, is called at the start
// and end of the measured window, from another goroutine.
func (e *Env) RunClient(ctx context.Context, addr netip.AddrPort, spec ClientSpec, onMark func(string)) (*ClientResult, error) {
	p, err := startProc(ctx, e.exe, e.Topo.ClientPod, "client", roleClient, spec.args(addr.String()), onMark)
	if err != nil {
		return nil, err
	}
	return p.wait(ctx)
}
