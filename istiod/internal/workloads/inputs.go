package workloads

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GatewayGetter returns the Gateway namespace/name, or nil if there is none.
type GatewayGetter func(namespace, name string) *gatewayv1.Gateway

// Inputs are what a translation reads besides the object it translates. The
// caller chooses how wide the candidate lists are: the translation filters
// them itself, so passing more than needed changes nothing but cost.
type Inputs struct {
	// Namespace is the object's namespace; nil reads as unlabelled.
	Namespace *corev1.Namespace
	// Node is the pod's node, for its locality; nil when unknown.
	Node *corev1.Node
	// Services and ServiceEntries are candidates for Workload.services.
	Services       []*corev1.Service
	ServiceEntries []*networkingv1.ServiceEntry
	// Gateways looks up the Gateways named by istio.io/use-waypoint; nil
	// finds none.
	Gateways GatewayGetter
	Mesh     MeshConfig
}

func (in Inputs) gateway(ref WaypointRef) *gatewayv1.Gateway {
	if in.Gateways == nil {
		return nil
	}
	return in.Gateways(ref.Namespace, ref.Name)
}
