package bench

import (
	"context"
	"errors"
)

// ErrZtunnelNotReady is what the ztunnel path returns until ztunnel exists.
var ErrZtunnelNotReady = errors.New("ztunnel path: not implemented yet (see tests/bench/path_ztunnel.go)")

// ztunnelPath is the seam for the mesh's own node proxy, the path this
// harness exists for. It stays out of the default suite until it works;
// `-paths direct,tls-chain,ztunnel` selects it, and the report then sets it
// against direct and tls-chain from the same run (tls-chain being the
// ceiling a Go ztunnel should come close to).
//
// To fill in Start, with the same Env as every other path:
//   - Start one ztunnel process per node: in env.Topo.Node1 for the client
//     pod, in env.Topo.Node2 for the server pod. startProc runs this
//     binary's child roles; ztunnel is a binary of its own, so add a variant
//     that takes a binary and a readiness probe (:15021/healthz/ready) and
//     returns the same *Proc, so that the /proc figures and Stop work as
//     they do for the forwarders.
//   - Give each its pod: the workload (name, namespace, service account,
//     env.Topo.ClientIP or ServerIP), the pod's netns (ClientPod.Path(),
//     ServerPod.Path()) over ZDS, and certificates from a throwaway CA like
//     env.PKI's.
//   - Capture inside the pods (outbound to 15001, inbound to 15006, HBONE on
//     15008) so the client dials the server pod exactly as on the direct
//     path: return Endpoint{Addr: env.ServerAddr, Proxies: both ztunnels}.
//   - Stop stops both processes; the capture rules go with the namespaces.
type ztunnelPath struct{}

func (ztunnelPath) Name() string { return PathZtunnel }

func (ztunnelPath) Start(context.Context, *Env) (Endpoint, error) {
	return Endpoint{}, ErrZtunnelNotReady
}

func (ztunnelPath) Stop() error { return nil }
