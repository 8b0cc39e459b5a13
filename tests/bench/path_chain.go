package bench

import (
	"context"
	"errors"
	"net/netip"
)

// chainPath puts two forwarder processes between the pods, one per node,
// the shape of a per-node proxy pair: client → forwarder in node1 →
// forwarder in node2 → server. Redirection is explicit (the client dials
// the first forwarder, which knows the target), so the figures are the cost
// of the proxies alone. With tls, the hop between the nodes is mutual TLS
// 1.3 with one TLS connection per client stream and no HTTP/2: the
// practical ceiling of an encrypted two-proxy path in Go without kTLS.
//
// With inPods, the forwarders run where ztunnel's in-pod listeners do:
// the first in the client pod's netns, the second in the server pod's, so
// that both pods' ends are local deliveries as on the ztunnel path. Only
// the capture's NAT and HBONE then tell the two apart.
type chainPath struct {
	name   string
	tls    bool
	inPods bool
	procs  []*Proc
}

func (p *chainPath) Name() string { return p.name }

func (p *chainPath) Start(ctx context.Context, env *Env) (_ Endpoint, err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Stop())
		}
	}()
	t := env.Topo
	// The second hop listens on the node network, as an inbound proxy
	// port does; the first on the client pod's gateway, which the client
	// reaches without leaving its node.
	hop2 := netip.AddrPortFrom(t.Node2IP, env.Port())
	hop1 := netip.AddrPortFrom(t.Node1PodGateway, env.Port())
	ns1, ns2 := t.Node1, t.Node2
	if p.inPods {
		hop2 = netip.AddrPortFrom(t.ServerIP, env.Port())
		hop1 = netip.AddrPortFrom(t.ClientIP, env.Port())
		ns1, ns2 = t.ClientPod, t.ServerPod
	}

	args2 := []string{"-listen", hop2.String(), "-target", env.ServerAddr.String()}
	args1 := []string{"-listen", hop1.String(), "-target", hop2.String()}
	if p.tls {
		n1, _ := env.PKI.Leaf(Node1ProxyID)
		n2, _ := env.PKI.Leaf(Node2ProxyID)
		args2 = append(args2, "-in", "tls", "-ca", env.PKI.CAFile, "-cert", n2.Cert, "-key", n2.Key, "-peer-id", n1.ID)
		args1 = append(args1, "-out", "tls", "-ca", env.PKI.CAFile, "-cert", n1.Cert, "-key", n1.Key, "-peer-id", n2.ID)
	}
	// Downstream first, so each hop's target is up when it starts.
	for _, h := range []struct {
		ns   Netns
		name string
		args []string
	}{
		{ns2, p.name + "-node2", args2},
		{ns1, p.name + "-node1", args1},
	} {
		proc, err := env.startChild(ctx, h.ns, h.name, roleForwarder, h.args...)
		if err != nil {
			return Endpoint{}, err
		}
		p.procs = append(p.procs, proc)
	}
	return Endpoint{Addr: hop1, Proxies: p.procs}, nil
}

func (p *chainPath) Stop() error {
	var errs []error
	for _, proc := range p.procs {
		errs = append(errs, proc.Stop())
	}
	p.procs = nil
	return errors.Join(errs...)
}
