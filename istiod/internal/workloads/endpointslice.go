package workloads

import (
	"fmt"
	"net/netip"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// EndpointSliceUID is the uid of the workload made from the endpoint with
// first address addr of EndpointSlice namespace/name, in Istio's form
// "<cluster>/discovery.k8s.io/EndpointSlice/<namespace>/<name>/<address>".
func EndpointSliceUID(clusterID, namespace, name, addr string) string {
	return clusterID + "/discovery.k8s.io/EndpointSlice/" + namespace + "/" + name + "/" + addr
}

// EndpointSlice translates the endpoints of es that are not pods into
// workloads of the Service svc the slice belongs to (its
// kubernetes.io/service-name label). Pods are translated from the Pod
// itself, which says far more than a slice, so endpoints that reference a
// Pod are skipped; what remains are the endpoints users manage by hand for
// Services without a selector, such as a database outside the cluster.
// They are plain (no HBONE), healthy unless marked not ready, and have no
// identity or waypoint: the slice cannot say either. FQDN slices and
// non-TCP ports are not supported. Errors name endpoints left out.
func EndpointSlice(es *discoveryv1.EndpointSlice, svc *corev1.Service, in Inputs) ([]*workloadapi.Address, []error) {
	if es == nil || svc == nil || es.AddressType == discoveryv1.AddressTypeFQDN {
		return nil, nil
	}
	if svc.Namespace != es.Namespace || svc.Name != es.Labels[discoveryv1.LabelServiceName] || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	mesh := in.Mesh.withDefaults()
	serviceKey := svc.Namespace + "/" + mesh.serviceHostname(svc.Name, svc.Namespace)

	// A slice port is named after the Service port and carries the target.
	ports := make([]*workloadapi.Port, 0, len(es.Ports))
	for _, p := range es.Ports {
		if p.Port == nil || p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		var name string
		if p.Name != nil {
			name = *p.Name
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Name == name && protocolOrTCP(sp.Protocol) == corev1.ProtocolTCP {
				ports = append(ports, &workloadapi.Port{ServicePort: uint32(sp.Port), TargetPort: uint32(*p.Port)})
				break
			}
		}
	}

	var out []*workloadapi.Address
	var errs []error
	seen := map[string]bool{}
	for i, ep := range es.Endpoints {
		if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
			continue
		}
		if len(ep.Addresses) == 0 {
			continue
		}
		addrs := make([][]byte, 0, len(ep.Addresses))
		for j, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.Zone() != "" {
				errs = append(errs, fmt.Errorf("endpointslice %s/%s: endpoints[%d].addresses[%d] %q: not an IP address; endpoint skipped",
					es.Namespace, es.Name, i, j, a))
				addrs = nil
				break
			}
			addrs = append(addrs, ip.Unmap().AsSlice())
		}
		if addrs == nil {
			continue
		}
		first := ep.Addresses[0]
		if seen[first] {
			errs = append(errs, fmt.Errorf("endpointslice %s/%s: endpoints[%d].addresses[0] %q: duplicate address; endpoint skipped",
				es.Namespace, es.Name, i, first))
			continue
		}
		seen[first] = true
		status := workloadapi.WorkloadStatus_HEALTHY
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			status = workloadapi.WorkloadStatus_UNHEALTHY
		}
		out = append(out, &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
			Uid:         EndpointSliceUID(mesh.ClusterID, es.Namespace, es.Name, first),
			Name:        es.Name,
			Namespace:   es.Namespace,
			Addresses:   addrs,
			Network:     mesh.Network,
			TrustDomain: mesh.TrustDomain,
			Status:      status,
			ClusterId:   mesh.ClusterID,
			Services:    map[string]*workloadapi.PortList{serviceKey: {Ports: ports}},
		}}})
	}
	return out, errs
}
