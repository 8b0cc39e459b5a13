package workloads

import corev1 "k8s.io/api/core/v1"

// Selects reports whether svc's selector picks pod, as the Kubernetes
// endpoints controller decides it: same namespace, every selector label
// present with the same value. An empty selector selects nothing, because
// such a Service's endpoints are managed by hand, not derived from pods.
// ExternalName Services select nothing either: Kubernetes ignores their
// selector and they have no endpoints.
func Selects(svc *corev1.Service, pod *corev1.Pod) bool {
	if svc == nil || pod == nil || len(svc.Spec.Selector) == 0 {
		return false
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	if svc.Namespace != pod.Namespace {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if got, ok := pod.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
