package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(name, node string, phase corev1.PodPhase) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system"},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func TestSelectPod(t *testing.T) {
	pods := []corev1.Pod{
		pod("ztunnel-c", "worker-2", corev1.PodRunning),
		pod("ztunnel-a", "worker-1", corev1.PodPending),
		pod("ztunnel-b", "worker-1", corev1.PodRunning),
	}
	tests := []struct {
		name, podName, node string
		pods                []corev1.Pod
		want, wantErr       string
	}{
		{name: "first running by name", pods: pods, want: "ztunnel-b"},
		{name: "by name", pods: pods, podName: "ztunnel-a", want: "ztunnel-a"},
		{name: "by node prefers running", pods: pods, node: "worker-1", want: "ztunnel-b"},
		{name: "by node", pods: pods, node: "worker-2", want: "ztunnel-c"},
		{name: "unknown name", pods: pods, podName: "ztunnel-x", wantErr: `no ztunnel pod "ztunnel-x" in namespace istio-system (ztunnel pods: ztunnel-a, ztunnel-b, ztunnel-c)`},
		{name: "unknown node", pods: pods, node: "worker-9", wantErr: `no ztunnel pod on node "worker-9" (ztunnel runs on: worker-1, worker-1, worker-2)`},
		{name: "none", wantErr: "no ztunnel pods in namespace istio-system: is the mesh installed"},
		{name: "none running", pods: pods[1:2], wantErr: "no running ztunnel pod in namespace istio-system (ztunnel pods: ztunnel-a Pending)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SelectPod(tt.pods, "ztunnel", "istio-system", tt.podName, tt.node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tt.want {
				t.Fatalf("picked %s, want %s", got.Name, tt.want)
			}
		})
	}
}

func TestSplitPodArg(t *testing.T) {
	for _, tt := range []struct{ arg, name, ns string }{
		{"ztunnel-abc", "ztunnel-abc", "istio-system"},
		{"ztunnel-abc.kube-system", "ztunnel-abc", "kube-system"},
		{"ztunnel-abc.", "ztunnel-abc", "istio-system"},
	} {
		name, ns := SplitPodArg(tt.arg, "istio-system")
		if name != tt.name || ns != tt.ns {
			t.Errorf("SplitPodArg(%q) = %q, %q; want %q, %q", tt.arg, name, ns, tt.name, tt.ns)
		}
	}
}

func TestImageTag(t *testing.T) {
	for image, want := range map[string]string{
		"docker.io/istio/ztunnel:1.28.0":        "1.28.0",
		"localhost:5000/mesh/istiod:dev":        "dev",
		"localhost:5000/mesh/istiod":            "unknown",
		"ztunnel@sha256:abcd":                   "unknown",
		"reg.example/ztunnel:1.2.3@sha256:abcd": "1.2.3",
	} {
		if got := ImageTag(image); got != want {
			t.Errorf("ImageTag(%q) = %q, want %q", image, got, want)
		}
	}
}
