package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// ztunnelPort is where the server the ztunnel path reaches listens: a port
// of its own, because the pods' redirection to ztunnel is limited to it, so
// that the other paths, measured between the same pods, bypass the mesh.
const ztunnelPort = 5202

// ztunnelPath is the mesh's own data path: client → ztunnel on node1 (in the
// client pod's netns, by redirection) → HBONE over mTLS → ztunnel on node2
// (in the server pod's netns) → server. The client dials the server pod
// exactly as on the direct path. Both ztunnels are the real binary, fed by
// a real control plane and ZDS (tests/meshlab).
type ztunnelPath struct {
	dir    string
	server *Proc
	mesh   *meshlab.Mesh
}

func (p *ztunnelPath) Name() string { return PathZtunnel }

func (p *ztunnelPath) Start(ctx context.Context, env *Env) (_ Endpoint, err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Stop())
		}
	}()
	if p.dir, err = os.MkdirTemp("", env.Topo.Prefix+"-ztunnel-"); err != nil {
		return Endpoint{}, err
	}
	bin, err := meshlab.Build(ctx, p.dir)
	if err != nil {
		return Endpoint{}, err
	}
	addr := netip.AddrPortFrom(env.Topo.ServerIP, ztunnelPort)
	if p.server, err = env.startChild(ctx, env.Topo.ServerPod, "ztunnel-server", roleServer, "-listen", addr.String()); err != nil {
		return Endpoint{}, err
	}
	p.mesh, err = meshlab.Start(ctx, meshlab.Options{
		Topology: env.Topo.Topology,
		Dir:      p.dir,
		Ztunnel:  bin,
		Env:      env.ztunnelEnv,
		Pods: []meshlab.PodSpec{
			{Name: "client", Node: 1, Mesh: true},
			{Name: "server", Node: 2, Mesh: true},
		},
		CapturePorts: []uint16{ztunnelPort},
	})
	if err != nil {
		return Endpoint{}, fmt.Errorf("start ztunnels: %w", err)
	}
	return Endpoint{Addr: addr, Proxies: []*Proc{
		externalProc("ztunnel-node1", p.mesh.Pid(1)),
		externalProc("ztunnel-node2", p.mesh.Pid(2)),
	}}, nil
}

func (p *ztunnelPath) Stop() error {
	var errs []error
	if p.mesh != nil {
		errs = append(errs, p.mesh.Close())
		p.mesh = nil
	}
	if p.server != nil {
		errs = append(errs, p.server.Stop())
		p.server = nil
	}
	if p.dir != "" {
		errs = append(errs, os.RemoveAll(p.dir))
		p.dir = ""
	}
	return errors.Join(errs...)
}
