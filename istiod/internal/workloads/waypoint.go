package workloads

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// WaypointRef names the Gateway an object asks to use as its waypoint.
type WaypointRef struct {
	Namespace, Name string
}

func (r WaypointRef) String() string { return r.Namespace + "/" + r.Name }

// LabelledWaypoint reads the waypoint that one object's own labels name,
// with istio.io/use-waypoint-namespace defaulting to defaultNamespace. It is
// false when the label is absent, empty or "none". Indexes use it to find
// the objects that depend on a Gateway.
func LabelledWaypoint(labels map[string]string, defaultNamespace string) (WaypointRef, bool) {
	name := labels[LabelUseWaypoint]
	if name == "" || name == WaypointNone {
		return WaypointRef{}, false
	}
	ns := labels[LabelUseWaypointNamespace]
	if ns == "" {
		ns = defaultNamespace
	}
	return WaypointRef{Namespace: ns, Name: name}, true
}

// UseWaypoint resolves istio.io/use-waypoint on an object (pod, service or
// ServiceEntry) and then on its namespace. The object's label wins,
// including its "none", so one object can opt out of a namespace-wide
// waypoint. istio.io/use-waypoint-namespace is read from whichever object
// named the waypoint, since that is the object the user configured.
func UseWaypoint(objLabels map[string]string, objNamespace string, ns *corev1.Namespace) (WaypointRef, bool) {
	if objLabels[LabelUseWaypoint] != "" {
		return LabelledWaypoint(objLabels, objNamespace)
	}
	if ns == nil {
		return WaypointRef{}, false
	}
	return LabelledWaypoint(ns.Labels, objNamespace)
}

// Waypoint is a Gateway that can take traffic: where to send it, which
// traffic it accepts and from which namespaces.
type Waypoint struct {
	Address *workloadapi.GatewayAddress
	// For is the istio.io/waypoint-for value: WaypointForService (the
	// default), WaypointForWorkload, WaypointForAll or WaypointForNone.
	For string

	namespace string
	from      gatewayv1.FromNamespaces
	selector  labels.Selector // for NamespacesFromSelector; nil matches nothing
}

// Allows reports whether objects of namespace ns (nil reads as unlabelled)
// may use the waypoint. As in Istio, the allowedRoutes of the Gateway's
// HBONE listener (port 15008) decide; without that listener or without
// allowedRoutes only the Gateway's own namespace may.
func (w *Waypoint) Allows(namespace string, ns *corev1.Namespace) bool {
	switch w.from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		var l map[string]string
		if ns != nil {
			l = ns.Labels
		}
		return w.selector != nil && w.selector.Matches(labels.Set(l))
	default:
		return namespace == w.namespace
	}
}

// attachment reads who may use gw, from its HBONE listener.
func attachment(gw *gatewayv1.Gateway) (gatewayv1.FromNamespaces, labels.Selector) {
	for _, l := range gw.Spec.Listeners {
		if l.Protocol != "HBONE" || l.Port != HBONEPort {
			continue
		}
		if l.AllowedRoutes == nil || l.AllowedRoutes.Namespaces == nil || l.AllowedRoutes.Namespaces.From == nil {
			return gatewayv1.NamespacesFromSame, nil
		}
		from := *l.AllowedRoutes.Namespaces.From
		if from != gatewayv1.NamespacesFromSelector {
			return from, nil
		}
		sel, err := metav1.LabelSelectorAsSelector(l.AllowedRoutes.Namespaces.Selector)
		if err != nil || l.AllowedRoutes.Namespaces.Selector == nil {
			// An unusable selector selects nothing rather than everything.
			return from, nil
		}
		return from, sel
	}
	return gatewayv1.NamespacesFromSame, nil
}

// Accepts reports whether the waypoint takes traffic addressed to services
// (forService) or to workloads.
func (w *Waypoint) Accepts(forService bool) bool {
	switch w.For {
	case WaypointForAll:
		return true
	case WaypointForService:
		return forService
	case WaypointForWorkload:
		return !forService
	}
	return false
}

// Reasons a Gateway is not a usable waypoint.
var (
	ErrGatewayNotFound  = errors.New("gateway not found")
	ErrNotWaypointClass = errors.New("gateway is not of class " + WaypointClassName)
	ErrNoGatewayAddress = errors.New("gateway has no address yet")
)

// WaypointFromGateway returns the waypoint gw provides on network, or why it
// provides none. The address is, in order of preference, a Hostname from
// status (stable across Service re-creation, and the key ztunnel indexes
// services by), an IP from status, then an IP requested in spec: the
// Gateway's controller publishes status once the waypoint is deployed, and
// a spec address lets a waypoint be used before a controller reports it.
func WaypointFromGateway(gw *gatewayv1.Gateway, network string) (*Waypoint, error) {
	if gw == nil {
		return nil, ErrGatewayNotFound
	}
	if gw.Spec.GatewayClassName != WaypointClassName {
		return nil, fmt.Errorf("%w (class %q)", ErrNotWaypointClass, gw.Spec.GatewayClassName)
	}
	wp := &Waypoint{For: gw.Labels[LabelWaypointFor], namespace: gw.Namespace}
	wp.from, wp.selector = attachment(gw)
	if wp.For == "" {
		wp.For = WaypointForService
	}
	for _, a := range gw.Status.Addresses {
		if a.Type != nil && *a.Type == gatewayv1.HostnameAddressType && a.Value != "" {
			wp.Address = &workloadapi.GatewayAddress{
				Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{
					Namespace: gw.Namespace, Hostname: a.Value,
				}},
				HboneMtlsPort: HBONEPort,
			}
			return wp, nil
		}
	}
	var bad []string
	ipAddress := func(t *gatewayv1.AddressType, v, field string) bool {
		if t != nil && *t != gatewayv1.IPAddressType {
			return false
		}
		ip, err := netip.ParseAddr(v)
		if err != nil || ip.Zone() != "" {
			bad = append(bad, fmt.Sprintf("%s %q is not an IP", field, v))
			return false
		}
		wp.Address = &workloadapi.GatewayAddress{
			Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Network: network, Address: ip.Unmap().AsSlice()}},
			HboneMtlsPort: HBONEPort,
		}
		return true
	}
	for i, a := range gw.Status.Addresses {
		if ipAddress(a.Type, a.Value, fmt.Sprintf("status.addresses[%d]", i)) {
			return wp, nil
		}
	}
	for i, a := range gw.Spec.Addresses {
		if ipAddress(a.Type, a.Value, fmt.Sprintf("spec.addresses[%d]", i)) {
			return wp, nil
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%w (%s)", ErrNoGatewayAddress, bad[0])
	}
	return nil, ErrNoGatewayAddress
}

// serviceWaypoint is the waypoint of a service-like object (a Service or a
// ServiceEntry's hosts). When the waypoint the labels name cannot be used
// yet (no such Gateway, not a waypoint class, no address), the service
// still points at the name the waypoint's Service will have. ztunnel cannot
// resolve that name, so it refuses the traffic instead of sending it
// straight to the backends: a user who asked for a waypoint relies on it
// for L7 policy, and silently bypassing it would drop that policy. The
// error explains the degraded state for the caller to log.
func (in Inputs) serviceWaypoint(kind, name, namespace string, labels map[string]string) (*workloadapi.GatewayAddress, error) {
	if labels[LabelGatewayManaged] == ManagedByMeshController {
		// A waypoint's own Service: its traffic must not loop back.
		return nil, nil
	}
	ref, ok := UseWaypoint(labels, namespace, in.Namespace)
	if !ok {
		return nil, nil
	}
	wp, err := WaypointFromGateway(in.gateway(ref), in.Mesh.Network)
	if err != nil {
		return gatewayAddress(ref.Name, ref.Namespace, in.Mesh),
			fmt.Errorf("%s %s/%s: waypoint %s: %w; pointing at its service name, so traffic is refused until the waypoint is ready", kind, namespace, name, ref, err)
	}
	if !wp.Accepts(true) {
		return nil, fmt.Errorf("%s %s/%s: waypoint %s takes %s=%q traffic, not service traffic; no waypoint used", kind, namespace, name, ref, LabelWaypointFor, wp.For)
	}
	if !wp.Allows(namespace, in.Namespace) {
		return nil, fmt.Errorf("%s %s/%s: waypoint %s does not allow namespace %s (allowedRoutes of its HBONE listener); no waypoint used", kind, namespace, name, ref, namespace)
	}
	return wp.Address, nil
}

// workloadWaypoint is the waypoint of a workload. A waypoint takes workload
// traffic only when its Gateway says so (istio.io/waypoint-for: workload or
// all; the default is service), so a waypoint that cannot be resolved yet
// gives no workload waypoint: that is what the default would give once it
// exists. A waypoint's own instances never point at a waypoint.
func (in Inputs) workloadWaypoint(namespace string, labels map[string]string) *workloadapi.GatewayAddress {
	if labels[LabelGatewayManaged] == ManagedByMeshController {
		return nil
	}
	ref, ok := UseWaypoint(labels, namespace, in.Namespace)
	if !ok {
		return nil
	}
	if ref.Namespace == namespace && labels[LabelGatewayName] == ref.Name {
		return nil
	}
	wp, err := WaypointFromGateway(in.gateway(ref), in.Mesh.Network)
	if err != nil || !wp.Accepts(false) || !wp.Allows(namespace, in.Namespace) {
		return nil
	}
	return wp.Address
}

// gatewayAddress points at a waypoint by the hostname of the Service its
// deployment gets (named after the Gateway).
func gatewayAddress(name, namespace string, mesh MeshConfig) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination: &workloadapi.GatewayAddress_Hostname{
			Hostname: &workloadapi.NamespacedHostname{
				Namespace: namespace,
				Hostname:  mesh.serviceHostname(name, namespace),
			},
		},
		HboneMtlsPort: HBONEPort,
	}
}
