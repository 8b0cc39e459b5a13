package workloads

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// Workload translates a pod into the workload ztunnel learns about.
// in.Services and in.ServiceEntries are candidates for Workload.services and
// may include objects that do not select the pod or live elsewhere. It
// returns nil when the pod is not a workload: it has no IP yet, shares the
// node's network (its IP is the node's, so it cannot be told apart from
// other host-network pods), or has terminated.
func Workload(pod *corev1.Pod, in Inputs) *workloadapi.Workload {
	if pod == nil || pod.Spec.HostNetwork {
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	addrs := podAddresses(pod)
	if len(addrs) == 0 {
		return nil
	}
	in.Mesh = in.Mesh.withDefaults()
	mesh := in.Mesh

	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	workloadName := podWorkloadName(pod)
	canonicalName := firstLabel(pod.Labels, canonicalNameLabels)
	if canonicalName == "" {
		canonicalName = workloadName
	}
	canonicalRevision := firstLabel(pod.Labels, canonicalRevisionLabels)
	if canonicalRevision == "" {
		canonicalRevision = "latest"
	}

	w := &workloadapi.Workload{
		Uid:               mesh.ClusterID + "//Pod/" + pod.Namespace + "/" + pod.Name,
		Name:              pod.Name,
		Namespace:         pod.Namespace,
		Addresses:         addrs,
		Network:           mesh.Network,
		TunnelProtocol:    tunnelProtocol(pod, in.Namespace),
		TrustDomain:       mesh.TrustDomain,
		ServiceAccount:    sa,
		Node:              pod.Spec.NodeName,
		CanonicalName:     canonicalName,
		CanonicalRevision: canonicalRevision,
		WorkloadType:      workloadapi.WorkloadType_POD,
		WorkloadName:      workloadName,
		Status:            podStatus(pod),
		ClusterId:         mesh.ClusterID,
		Services:          podServices(pod, in),
		Waypoint:          in.workloadWaypoint(pod.Namespace, pod.Labels),
		Locality:          podLocality(pod, in.Node),
	}
	return w
}

// Locality labels, as Istio reads them: the pod's own istio-locality
// ("region.zone.subzone"; label values cannot hold '/'), else its node's
// topology labels.
const (
	LabelPodLocality = "istio-locality"
	LabelRegion      = "topology.kubernetes.io/region"
	LabelZone        = "topology.kubernetes.io/zone"
	LabelSubzone     = "topology.istio.io/subzone"
)

// podLocality is where the pod runs, or nil when nothing says.
func podLocality(pod *corev1.Pod, node *corev1.Node) *workloadapi.Locality {
	if v := pod.Labels[LabelPodLocality]; v != "" {
		parts := strings.SplitN(v, ".", 3)
		parts = append(parts, "", "")
		return &workloadapi.Locality{Region: parts[0], Zone: parts[1], Subzone: parts[2]}
	}
	if node == nil {
		return nil
	}
	l := &workloadapi.Locality{Region: node.Labels[LabelRegion], Zone: node.Labels[LabelZone], Subzone: node.Labels[LabelSubzone]}
	if l.Region == "" && l.Zone == "" && l.Subzone == "" {
		return nil
	}
	return l
}

// podAddresses reads PodIPs (all families) and falls back to PodIP for
// objects written before dual-stack, skipping anything that does not parse.
func podAddresses(pod *corev1.Pod) [][]byte {
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	var out [][]byte
	for _, ip := range ips {
		if b, ok := ipBytes(ip); ok {
			out = append(out, b)
		}
	}
	return out
}

// tunnelProtocol decides ambient enrolment. The pod's own label wins either
// way, so a pod can opt out of an ambient namespace or opt in alone.
func tunnelProtocol(pod *corev1.Pod, ns *corev1.Namespace) workloadapi.TunnelProtocol {
	switch pod.Labels[LabelDataplaneMode] {
	case DataplaneModeAmbient:
		return workloadapi.TunnelProtocol_HBONE
	case DataplaneModeNone:
		return workloadapi.TunnelProtocol_NONE
	}
	if ns != nil && ns.Labels[LabelDataplaneMode] == DataplaneModeAmbient {
		return workloadapi.TunnelProtocol_HBONE
	}
	return workloadapi.TunnelProtocol_NONE
}

// podStatus is HEALTHY only for a ready pod that is not shutting down: a
// terminating pod may still report Ready while it drains, and new
// connections should not be sent to it.
func podStatus(pod *corev1.Pod) workloadapi.WorkloadStatus {
	if pod.DeletionTimestamp != nil {
		return workloadapi.WorkloadStatus_UNHEALTHY
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return workloadapi.WorkloadStatus_HEALTHY
		}
	}
	return workloadapi.WorkloadStatus_UNHEALTHY
}

// podWorkloadName names the thing users deployed, which is what telemetry
// and ztunnel-config show. A Deployment's pods are controlled by a
// ReplicaSet named "<deployment>-<pod-template-hash>"; the pod carries the
// hash as a label, so trimming it recovers the Deployment name without
// looking the ReplicaSet up.
func podWorkloadName(pod *corev1.Pod) string {
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Name == "" {
		return pod.Name
	}
	if owner.Kind == "ReplicaSet" {
		if hash := pod.Labels[podTemplateHashLabel]; hash != "" {
			if name, ok := strings.CutSuffix(owner.Name, "-"+hash); ok && name != "" {
				return name
			}
		}
	}
	return owner.Name
}

// podServices builds the "namespace/hostname" -> ports map ztunnel uses to
// turn a connection to a service VIP and port into a connection to this pod,
// from the Services and the ServiceEntries (by workloadSelector) that
// select it.
func podServices(pod *corev1.Pod, in Inputs) map[string]*workloadapi.PortList {
	var out map[string]*workloadapi.PortList
	for _, se := range in.ServiceEntries {
		if !ServiceEntrySelects(se, pod) {
			continue
		}
		if _, err := serviceEntryAddresses(se, in.Mesh.Network); err != nil {
			// The entry translates to nothing, so nothing to refer to.
			continue
		}
		if out == nil {
			out = make(map[string]*workloadapi.PortList)
		}
		for _, h := range serviceEntryHosts(se) {
			out[se.Namespace+"/"+h] = &workloadapi.PortList{Ports: serviceEntryPorts(se, nil)}
		}
	}
	mesh := in.Mesh
	for _, svc := range in.Services {
		if !Selects(svc, pod) {
			continue
		}
		ports := make([]*workloadapi.Port, 0, len(svc.Spec.Ports))
		for _, p := range svc.Spec.Ports {
			target, ok := resolveTargetPort(pod, p)
			if !ok {
				// Kubernetes leaves the pod out of this port's endpoints
				// when the named port is missing; drop the port the same way.
				continue
			}
			ports = append(ports, &workloadapi.Port{ServicePort: uint32(p.Port), TargetPort: target})
		}
		if out == nil {
			out = make(map[string]*workloadapi.PortList)
		}
		// Keep the Service even with no resolvable port: it still tells
		// ztunnel the pod backs that hostname.
		out[svc.Namespace+"/"+mesh.serviceHostname(svc.Name, svc.Namespace)] = &workloadapi.PortList{Ports: ports}
	}
	return out
}

// resolveTargetPort maps a Service port to the pod port it reaches. A named
// targetPort is looked up in the pod's containers, as the endpoints
// controller does; an unset one means the service port itself, which is
// also what the API server would default it to.
func resolveTargetPort(pod *corev1.Pod, p corev1.ServicePort) (uint32, bool) {
	switch {
	case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p.TargetPort.StrVal && protocolOrTCP(cp.Protocol) == protocolOrTCP(p.Protocol) {
					return uint32(cp.ContainerPort), true
				}
			}
		}
		return 0, false
	case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal > 0:
		return uint32(p.TargetPort.IntVal), true
	default:
		return uint32(p.Port), true
	}
}

// protocolOrTCP applies the API server default, so objects built without it
// (in tests, or before defaulting) still match container ports.
func protocolOrTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}
