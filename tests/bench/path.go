package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// Path is one data path under test between the client pod and the server
// pod. Start launches whatever the path needs (proxy processes, redirection)
// in env's topology and says what the client dials; the harness then drives
// the same client and server through every path, so the figures compare.
type Path interface {
	Name() string
	// Start sets the path up. The server is already listening on
	// env.ServerAddr. On error, Start leaves nothing running.
	Start(ctx context.Context, env *Env) (Endpoint, error)
	// Stop stops everything Start launched.
	Stop() error
}

// Endpoint is a started path, as the harness sees it.
type Endpoint struct {
	// Addr is what the client pod dials: the first hop for paths whose
	// redirection is explicit, the server pod itself for transparent ones.
	Addr netip.AddrPort
	// Proxies are the path's hop processes. Their CPU time and peak RSS are
	// read from /proc; direct has none.
	Proxies []*Proc
}

// Names of the built-in paths.
const (
	PathDirect   = "direct"
	PathTCPChain = "tcp-chain"
	PathTLSChain = "tls-chain"
	PathZtunnel  = "ztunnel"
	// PathTLSInPods is the TLS chain with its forwarders in the pods'
	// network namespaces, where ztunnel's listeners are: not measured by
	// default, it tells what of ztunnel's gap to the TLS chain comes from
	// where the proxies sit rather than from what they do.
	PathTLSInPods = "tls-in-pods"
)

type pathEntry struct {
	name      string
	inDefault bool
	new       func() Path
}

// paths lists every path in report order. A new path is one entry here.
var paths = []pathEntry{
	{PathDirect, true, func() Path { return directPath{} }},
	{PathTCPChain, true, func() Path { return &chainPath{name: PathTCPChain} }},
	{PathTLSChain, true, func() Path { return &chainPath{name: PathTLSChain, tls: true} }},
	{PathZtunnel, true, func() Path { return &ztunnelPath{} }},
	{PathTLSInPods, false, func() Path { return &chainPath{name: PathTLSInPods, tls: true, inPods: true} }},
}

// DefaultPaths are the paths a run measures unless told otherwise.
func DefaultPaths() []string {
	var names []string
	for _, p := range paths {
		if p.inDefault {
			names = append(names, p.name)
		}
	}
	return names
}

// NewPath returns the path with the given name.
func NewPath(name string) (Path, error) {
	var names []string
	for _, p := range paths {
		if p.name == name {
			return p.new(), nil
		}
		names = append(names, p.name)
	}
	return nil, fmt.Errorf("unknown path %q (known: %s)", name, strings.Join(names, ", "))
}

// directPath is the baseline: the client dials the server pod, nothing in
// between but the nodes' routing.
type directPath struct{}

func (directPath) Name() string { return PathDirect }

func (directPath) Start(_ context.Context, env *Env) (Endpoint, error) {
	return Endpoint{Addr: env.ServerAddr}, nil
}

func (directPath) Stop() error { return nil }
