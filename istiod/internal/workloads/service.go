package workloads

import (
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Service translates a Kubernetes Service into the service ztunnel learns
// about; in.Namespace and in.Gateways are read. It returns nil for
// ExternalName Services: they are DNS aliases with no VIP and no endpoints,
// so there is nothing for ztunnel to capture or balance. Headless Services
// still translate, with no addresses, so their pods' Workload.services
// entries refer to a known hostname. The errors explain a degraded
// translation (a waypoint that cannot be used yet); the Service is still
// returned.
func Service(svc *corev1.Service, in Inputs) (*workloadapi.Service, []error) {
	if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	in.Mesh = in.Mesh.withDefaults()
	mesh := in.Mesh

	out := &workloadapi.Service{
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Hostname:  mesh.serviceHostname(svc.Name, svc.Namespace),
		Addresses: serviceAddresses(svc, mesh.Network),
		Ports:     servicePorts(svc),
	}
	var errs []error
	wp, err := in.serviceWaypoint("service", svc.Name, svc.Namespace, svc.Labels)
	out.Waypoint = wp
	if err != nil {
		errs = append(errs, err)
	}
	return out, errs
}

// serviceAddresses reads ClusterIPs (one per family on dual-stack clusters)
// and falls back to ClusterIP for objects that predate the list. "None"
// marks a headless Service and is skipped by the parse.
func serviceAddresses(svc *corev1.Service, network string) []*workloadapi.NetworkAddress {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []*workloadapi.NetworkAddress
	for _, ip := range ips {
		if b, ok := ipBytes(ip); ok {
			out = append(out, &workloadapi.NetworkAddress{Network: network, Address: b})
		}
	}
	return out
}

// servicePorts keeps the spec's order so output is stable. A named
// targetPort can differ per pod, so it is left 0 here and resolved per
// workload in Workload.services; an unset one defaults to the port as the
// API server would.
func servicePorts(svc *corev1.Service) []*workloadapi.Port {
	var out []*workloadapi.Port
	for _, p := range svc.Spec.Ports {
		port := &workloadapi.Port{ServicePort: uint32(p.Port)}
		switch {
		case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal > 0:
			port.TargetPort = uint32(p.TargetPort.IntVal)
		case p.TargetPort.Type == intstr.Int:
			port.TargetPort = uint32(p.Port)
		}
		out = append(out, port)
	}
	return out
}
