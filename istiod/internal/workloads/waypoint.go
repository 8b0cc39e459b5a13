package workloads

import (
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
)

// waypointFor resolves istio.io/use-waypoint on an object (pod or service)
// and then on its namespace. The object's label wins, including its "none",
// so one workload can opt out of a namespace-wide waypoint. The optional
// istio.io/use-waypoint-namespace label is read from whichever object named
// the waypoint, since that is the object the user configured.
func waypointFor(objLabels map[string]string, objNamespace string, ns *corev1.Namespace) (name, namespace string, ok bool) {
	src := objLabels
	if objLabels[LabelUseWaypoint] == "" {
		if ns == nil {
			return "", "", false
		}
		src = ns.Labels
	}
	name = src[LabelUseWaypoint]
	if name == "" || name == WaypointNone {
		return "", "", false
	}
	namespace = src[LabelUseWaypointNamespace]
	if namespace == "" {
		namespace = objNamespace
	}
	return name, namespace, true
}

// gatewayAddress points at a waypoint by hostname rather than by IP, so the
// resource stays valid when the waypoint Service's VIP changes; ztunnel
// resolves the hostname against the Services it already knows.
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
