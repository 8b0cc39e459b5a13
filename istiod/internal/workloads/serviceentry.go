package workloads

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
)

// ServiceEntryUID is the uid of the workload made from the inline endpoint
// with address addr of ServiceEntry namespace/name, in Istio's form
// "<cluster>/networking.istio.io/ServiceEntry/<namespace>/<name>/<address>".
func ServiceEntryUID(clusterID, namespace, name, addr string) string {
	return clusterID + "/networking.istio.io/ServiceEntry/" + namespace + "/" + name + "/" + addr
}

// ServiceEntry translates a ServiceEntry into one service per host and one
// workload per inline endpoint (spec.endpoints); pods it selects with
// spec.workloadSelector get its hosts from Workload. in.Namespace and
// in.Gateways are read.
//
// A ServiceEntry whose spec.addresses holds something that is not an IP
// translates to nothing, with an error naming the field: a service missing
// one of its VIPs would let that VIP's traffic escape capture. An endpoint
// whose address is not an IP (DNS names and Unix sockets, which ztunnel
// cannot dial) is left out with an error, and the rest translates.
func ServiceEntry(se *networkingv1.ServiceEntry, in Inputs) ([]*workloadapi.Address, []error) {
	if se == nil {
		return nil, nil
	}
	in.Mesh = in.Mesh.withDefaults()
	mesh := in.Mesh
	spec := &se.Spec
	vips, err := serviceEntryAddresses(se, mesh.Network)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	waypoint, err := in.serviceWaypoint("serviceentry", se.Name, se.Namespace, se.Labels)
	if err != nil {
		errs = append(errs, err)
	}
	hosts := serviceEntryHosts(se)
	ports := serviceEntryPorts(se, nil)

	var out []*workloadapi.Address
	for _, h := range hosts {
		addrs := vips
		if len(spec.GetAddresses()) == 0 {
			addrs = allocatedAddresses(se, h, mesh.Network)
		}
		out = append(out, &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
			Name:            se.Name,
			Namespace:       se.Namespace,
			Hostname:        h,
			Addresses:       addrs,
			Ports:           ports,
			SubjectAltNames: slices.Clone(spec.GetSubjectAltNames()),
			Waypoint:        waypoint,
		}}})
	}

	canonicalName := firstLabel(se.Labels, canonicalNameLabels)
	if canonicalName == "" {
		canonicalName = se.Name
	}
	canonicalRevision := firstLabel(se.Labels, canonicalRevisionLabels)
	if canonicalRevision == "" {
		canonicalRevision = "latest"
	}
	tunnel := workloadapi.TunnelProtocol_NONE
	if se.Labels[LabelTunnel] == TunnelHTTP {
		tunnel = workloadapi.TunnelProtocol_HBONE
	}
	seen := map[string]bool{}
	for i, ep := range spec.GetEndpoints() {
		ip, err := netip.ParseAddr(ep.GetAddress())
		if err != nil || ip.Zone() != "" {
			errs = append(errs, fmt.Errorf("serviceentry %s/%s: spec.endpoints[%d].address %q: not an IP address; endpoint skipped",
				se.Namespace, se.Name, i, ep.GetAddress()))
			continue
		}
		uid := ServiceEntryUID(mesh.ClusterID, se.Namespace, se.Name, ep.GetAddress())
		if seen[uid] {
			errs = append(errs, fmt.Errorf("serviceentry %s/%s: spec.endpoints[%d].address %q: duplicate address; endpoint skipped",
				se.Namespace, se.Name, i, ep.GetAddress()))
			continue
		}
		seen[uid] = true
		network := ep.GetNetwork()
		if network == "" {
			network = mesh.Network
		}
		var services map[string]*workloadapi.PortList
		if len(hosts) > 0 {
			services = make(map[string]*workloadapi.PortList, len(hosts))
			for _, h := range hosts {
				services[se.Namespace+"/"+h] = &workloadapi.PortList{Ports: serviceEntryPorts(se, ep)}
			}
		}
		w := &workloadapi.Workload{
			Uid:               uid,
			Name:              se.Name,
			Namespace:         se.Namespace,
			Addresses:         [][]byte{ip.Unmap().AsSlice()},
			Network:           network,
			TunnelProtocol:    tunnel,
			TrustDomain:       mesh.TrustDomain,
			ServiceAccount:    ep.GetServiceAccount(),
			CanonicalName:     canonicalName,
			CanonicalRevision: canonicalRevision,
			WorkloadType:      workloadapi.WorkloadType_POD,
			WorkloadName:      se.Name,
			Status:            workloadapi.WorkloadStatus_HEALTHY,
			ClusterId:         mesh.ClusterID,
			Services:          services,
		}
		if ep.GetLabels()[LabelGatewayManaged] != ManagedByMeshController {
			// Endpoints have no metadata of their own: only the
			// namespace can put them behind a waypoint.
			w.Waypoint = in.workloadWaypoint(se.Namespace, nil)
		}
		out = append(out, &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}})
	}
	return out, errs
}

// ServiceEntrySelects reports whether se's workloadSelector picks pod: same
// namespace and every label matching. An absent or empty selector selects
// nothing.
func ServiceEntrySelects(se *networkingv1.ServiceEntry, pod *corev1.Pod) bool {
	if se == nil || pod == nil || se.Namespace != pod.Namespace {
		return false
	}
	sel := se.Spec.GetWorkloadSelector().GetLabels()
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if got, ok := pod.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// serviceEntryAddresses parses spec.addresses. Each must be an IP or a
// single-address prefix (a /32 or /128, as users often write VIPs); a wider
// CIDR is not a VIP ztunnel can own.
func serviceEntryAddresses(se *networkingv1.ServiceEntry, network string) ([]*workloadapi.NetworkAddress, error) {
	var out []*workloadapi.NetworkAddress
	for i, a := range se.Spec.GetAddresses() {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			p, perr := netip.ParsePrefix(a)
			if perr != nil || !p.IsSingleIP() {
				return nil, fmt.Errorf("serviceentry %s/%s: spec.addresses[%d] %q: not an IP address or single-address CIDR; entry not served",
					se.Namespace, se.Name, i, a)
			}
			ip = p.Addr()
		}
		if ip.Zone() != "" {
			return nil, fmt.Errorf("serviceentry %s/%s: spec.addresses[%d] %q: zoned addresses are not VIPs; entry not served",
				se.Namespace, se.Name, i, a)
		}
		out = append(out, &workloadapi.NetworkAddress{Network: network, Address: ip.Unmap().AsSlice()})
	}
	return out, nil
}

// allocatedAddresses are the VIPs Istio's IP auto-allocation published in
// status for host h, used when the spec gives none. Wildcard hosts and
// resolution NONE get no allocation, as in Istio.
func allocatedAddresses(se *networkingv1.ServiceEntry, h, network string) []*workloadapi.NetworkAddress {
	if se.Spec.GetResolution() == networkingv1alpha3.ServiceEntry_NONE || len(h) > 0 && h[0] == '*' {
		return nil
	}
	var out []*workloadapi.NetworkAddress
	for _, a := range se.Status.GetAddresses() {
		if a.GetHost() != h {
			continue
		}
		if ip, err := netip.ParseAddr(a.GetValue()); err == nil && ip.Zone() == "" {
			out = append(out, &workloadapi.NetworkAddress{Network: network, Address: ip.Unmap().AsSlice()})
		}
	}
	return out
}

// serviceEntryHosts is spec.hosts without empty or repeated names.
func serviceEntryHosts(se *networkingv1.ServiceEntry) []string {
	var out []string
	for _, h := range se.Spec.GetHosts() {
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// serviceEntryPorts maps each port to its target: an endpoint's named port
// override when ep has one, else the port's targetPort, else its number.
func serviceEntryPorts(se *networkingv1.ServiceEntry, ep *networkingv1alpha3.WorkloadEntry) []*workloadapi.Port {
	out := make([]*workloadapi.Port, 0, len(se.Spec.GetPorts()))
	for _, p := range se.Spec.GetPorts() {
		if p.GetNumber() == 0 {
			continue
		}
		target := p.GetTargetPort()
		if t := ep.GetPorts()[p.GetName()]; t != 0 && p.GetName() != "" {
			target = t
		}
		if target == 0 {
			target = p.GetNumber()
		}
		out = append(out, &workloadapi.Port{ServicePort: p.GetNumber(), TargetPort: target})
	}
	return out
}
