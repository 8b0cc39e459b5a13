package nodeagent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	policy := Policy{ExcludedNamespaces: map[string]bool{"kube-system": true, "istio-system": true}}
	ambientNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps", Labels: map[string]string{LabelDataplaneMode: ModeAmbient}}}
	plainNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "apps", Labels: map[string]string{}}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want bool
	}{
		{"namespace label", pod(nil), ambientNS, true},
		{"no label", pod(nil), plainNS, false},
		{"unknown namespace", pod(nil), nil, false},
		{"pod label in a plain namespace", pod(func(p *corev1.Pod) { p.Labels[LabelDataplaneMode] = ModeAmbient }), plainNS, true},
		{"pod opts out", pod(func(p *corev1.Pod) { p.Labels[LabelDataplaneMode] = ModeNone }), ambientNS, false},
		{"host network", pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), ambientNS, false},
		{"sidecar container", pod(func(p *corev1.Pod) { p.Spec.Containers = []corev1.Container{{Name: "app"}, {Name: SidecarContainer}} }), ambientNS, false},
		{"native sidecar", pod(func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: SidecarContainer}} }), ambientNS, false},
		{"sidecar annotation", pod(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationSidecar: "{}"} }), ambientNS, false},
		{"waypoint", pod(func(p *corev1.Pod) { p.Labels[LabelGatewayManaged] = ManagedWaypoint }), ambientNS, false},
		{"excluded namespace even with a pod label", pod(func(p *corev1.Pod) {
			p.Namespace = "kube-system"
			p.Labels[LabelDataplaneMode] = ModeAmbient
		}), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := policy.Decide(tc.pod, tc.ns)
			if d.Enrolled != tc.want || d.Reason == "" {
				t.Errorf("Decide = %+v, want enrolled %v with a reason", d, tc.want)
			}
		})
	}
}
