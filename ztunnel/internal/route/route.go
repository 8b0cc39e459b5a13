package route

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// HBONEPort is where every mesh workload and waypoint takes tunnels.
const HBONEPort = 15008

// DefaultTrustDomain applies to workloads that do not name theirs.
const DefaultTrustDomain = "cluster.local"

// Target is how to carry one outbound connection.
type Target struct {
	// HBONE is false for plain TCP to Dial.
	HBONE bool
	// Dial is where to connect: a pod's or waypoint's IP:15008, or the
	// destination itself for plain TCP.
	Dial netip.AddrPort
	// Authority is the CONNECT target: the endpoint's IP and target port,
	// or for a waypoint the original destination.
	Authority netip.AddrPort
	// Identities the peer may present (the workload's, plus the
	// service's subject alt names).
	Identities []spiffe.Identity
	// Workload is the peer's workload, if known.
	Workload *workloadapi.Workload
	// Waypoint is set when the tunnel goes to a waypoint.
	Waypoint bool
}

// ErrNoEndpoint is returned for a service with no healthy endpoint.
var ErrNoEndpoint = errors.New("no healthy endpoint")

// Picker chooses one of n endpoints (load balancing).
type Picker func(n int) int

// Resolve routes a connection from src (the local workload that opened it)
// to dst.
func Resolve(st *state.Store, src *workloadapi.Workload, dst netip.AddrPort, pick Picker) (Target, error) {
	if svc := st.ServiceByVIP(dst.Addr()); svc != nil {
		return resolveService(st, src, svc, dst, pick)
	}
	if w := st.WorkloadByIP(dst.Addr()); w != nil {
		if gw := w.GetWaypoint(); gw != nil && !isWaypoint(st, src, gw) {
			return viaWaypoint(st, gw, dst, pick)
		}
		return toWorkload(w, dst.Addr(), dst.Port(), nil), nil
	}
	// Not in the mesh: straight through.
	return Target{Dial: dst}, nil
}

func resolveService(st *state.Store, src *workloadapi.Workload, svc *workloadapi.Service, dst netip.AddrPort, pick Picker) (Target, error) {
	if gw := svc.GetWaypoint(); gw != nil && !isWaypoint(st, src, gw) {
		return viaWaypoint(st, gw, dst, pick)
	}
	key := svc.GetNamespace() + "/" + svc.GetHostname()
	eps := st.Endpoints(key)
	if len(eps) == 0 {
		return Target{}, fmt.Errorf("service %s: %w", key, ErrNoEndpoint)
	}
	ep := eps[pick(len(eps))]
	port := targetPort(ep, key, svc, dst.Port())
	addr, ok := firstAddr(ep)
	if !ok {
		return Target{}, fmt.Errorf("service %s: endpoint %s has no address: %w", key, ep.GetUid(), ErrNoEndpoint)
	}
	var sans []spiffe.Identity
	for _, s := range svc.GetSubjectAltNames() {
		if id, err := spiffe.Parse(s); err == nil {
			sans = append(sans, id)
		}
	}
	return toWorkload(ep, addr, port, sans), nil
}

// targetPort maps a service port to the endpoint's port: the endpoint's
// own mapping first, then the service's, then the same port.
func targetPort(ep *workloadapi.Workload, key string, svc *workloadapi.Service, port uint16) uint16 {
	for _, p := range ep.GetServices()[key].GetPorts() {
		if p.GetServicePort() == uint32(port) && p.GetTargetPort() != 0 {
			return uint16(p.GetTargetPort())
		}
	}
	for _, p := range svc.GetPorts() {
		if p.GetServicePort() == uint32(port) && p.GetTargetPort() != 0 {
			return uint16(p.GetTargetPort())
		}
	}
	return port
}

func toWorkload(w *workloadapi.Workload, ip netip.Addr, port uint16, sans []spiffe.Identity) Target {
	target := netip.AddrPortFrom(ip, port)
	if w.GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE {
		return Target{Dial: target, Workload: w}
	}
	return Target{
		HBONE:      true,
		Dial:       netip.AddrPortFrom(ip, HBONEPort),
		Authority:  target,
		Identities: append([]spiffe.Identity{Identity(w)}, sans...),
		Workload:   w,
	}
}

// viaWaypoint tunnels to one of the waypoint's instances, asking it for
// the original destination.
func viaWaypoint(st *state.Store, gw *workloadapi.GatewayAddress, dst netip.AddrPort, pick Picker) (Target, error) {
	wps, err := waypointInstances(st, gw)
	if err != nil {
		return Target{}, err
	}
	wp := wps[pick(len(wps))]
	addr, ok := firstAddr(wp)
	if !ok {
		return Target{}, fmt.Errorf("waypoint %s has no address: %w", wp.GetUid(), ErrNoEndpoint)
	}
	port := uint16(gw.GetHboneMtlsPort())
	if port == 0 {
		port = HBONEPort
	}
	return Target{
		HBONE:      true,
		Dial:       netip.AddrPortFrom(addr, port),
		Authority:  dst,
		Identities: []spiffe.Identity{Identity(wp)},
		Workload:   wp,
		Waypoint:   true,
	}, nil
}

// waypointInstances returns the healthy workloads behind a gateway
// address, which names a waypoint service (by hostname or VIP) or a
// waypoint workload.
func waypointInstances(st *state.Store, gw *workloadapi.GatewayAddress) ([]*workloadapi.Workload, error) {
	switch d := gw.GetDestination().(type) {
	case *workloadapi.GatewayAddress_Hostname:
		key := d.Hostname.GetNamespace() + "/" + d.Hostname.GetHostname()
		if eps := st.Endpoints(key); len(eps) > 0 {
			return eps, nil
		}
		return nil, fmt.Errorf("waypoint %s: %w", key, ErrNoEndpoint)
	case *workloadapi.GatewayAddress_Address:
		ip, ok := netip.AddrFromSlice(d.Address.GetAddress())
		if !ok {
			return nil, fmt.Errorf("waypoint address %x is not an IP", d.Address.GetAddress())
		}
		if svc := st.ServiceByVIP(ip); svc != nil {
			if eps := st.Endpoints(svc.GetNamespace() + "/" + svc.GetHostname()); len(eps) > 0 {
				return eps, nil
			}
			return nil, fmt.Errorf("waypoint %s: %w", svc.GetHostname(), ErrNoEndpoint)
		}
		if w := st.WorkloadByIP(ip); w != nil {
			return []*workloadapi.Workload{w}, nil
		}
		return nil, fmt.Errorf("waypoint %s unknown: %w", ip, ErrNoEndpoint)
	default:
		return nil, errors.New("waypoint with no destination")
	}
}

// isWaypoint reports whether src is one of the gateway's instances: a
// waypoint's own traffic to the destination must not loop back to it.
func isWaypoint(st *state.Store, src *workloadapi.Workload, gw *workloadapi.GatewayAddress) bool {
	if src == nil {
		return false
	}
	wps, err := waypointInstances(st, gw)
	if err != nil {
		return false
	}
	for _, w := range wps {
		if w.GetUid() == src.GetUid() {
			return true
		}
	}
	return false
}

// Identity is a workload's SPIFFE identity.
func Identity(w *workloadapi.Workload) spiffe.Identity {
	td := w.GetTrustDomain()
	if td == "" {
		td = DefaultTrustDomain
	}
	sa := w.GetServiceAccount()
	if sa == "" {
		sa = "default"
	}
	return spiffe.Identity{TrustDomain: td, Namespace: w.GetNamespace(), ServiceAccount: sa}
}

func firstAddr(w *workloadapi.Workload) (netip.Addr, bool) {
	for _, a := range w.GetAddresses() {
		if ip, ok := netip.AddrFromSlice(a); ok {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}
