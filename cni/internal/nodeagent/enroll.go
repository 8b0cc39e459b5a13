// Package nodeagent is the CNI node agent: it decides which pods on its
// node are enrolled in the mesh, configures their redirection and hands
// their network namespaces to the node's ztunnel over ZDS.
package nodeagent

import (
	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations, as Istio spells them.
const (
	LabelDataplaneMode  = "istio.io/dataplane-mode"
	ModeAmbient         = "ambient"
	ModeNone            = "none"
	AnnotationRedirect  = "ambient.istio.io/redirection"
	RedirectionEnabled  = "enabled"
	AnnotationSidecar   = "sidecar.istio.io/status"
	SidecarContainer    = "istio-proxy"
	LabelGatewayManaged = "gateway.istio.io/managed"
	ManagedWaypoint     = "istio.io-mesh-controller"
)

// Policy says which pods are never enrolled.
type Policy struct {
	// ExcludedNamespaces are never enrolled: kube-system and the mesh's own
	// namespace, where ztunnel and the node agent run.
	ExcludedNamespaces map[string]bool
}

// Decision is whether a pod is enrolled, and why, for logs.
type Decision struct {
	Enrolled bool
	Reason   string
}

// Decide reports whether pod, in namespace ns (nil when unknown), is
// enrolled: its own istio.io/dataplane-mode label wins (ambient or none),
// else its namespace's; host-network pods, pods with an Istio sidecar,
// waypoints and pods of excluded namespaces never are.
func (p Policy) Decide(pod *corev1.Pod, ns *corev1.Namespace) Decision {
	switch {
	case p.ExcludedNamespaces[pod.Namespace]:
		return Decision{false, "namespace " + pod.Namespace + " is excluded"}
	case pod.Spec.HostNetwork:
		return Decision{false, "host network"}
	case hasSidecar(pod):
		return Decision{false, "has an Istio sidecar"}
	case pod.Labels[LabelGatewayManaged] == ManagedWaypoint:
		return Decision{false, "waypoint"}
	}
	switch pod.Labels[LabelDataplaneMode] {
	case ModeAmbient:
		return Decision{true, "pod label " + LabelDataplaneMode + "=" + ModeAmbient}
	case ModeNone:
		return Decision{false, "pod label " + LabelDataplaneMode + "=" + ModeNone}
	}
	if ns != nil && ns.Labels[LabelDataplaneMode] == ModeAmbient {
		return Decision{true, "namespace label " + LabelDataplaneMode + "=" + ModeAmbient}
	}
	return Decision{false, "not labelled " + LabelDataplaneMode + "=" + ModeAmbient}
}

func hasSidecar(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[AnnotationSidecar]; ok {
		return true
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Name == SidecarContainer {
			return true
		}
	}
	return false
}
