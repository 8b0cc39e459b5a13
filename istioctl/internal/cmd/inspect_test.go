package cmd

import (
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/kube/kubetest"
)

func meshPod(name, app, node, image string) corev1.Pod {
	container := map[string]string{"ztunnel": "istio-proxy", "istiod": "discovery"}[app]
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system", Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: container, Image: image}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func serve(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) })
}

// A dump as ztunnel's admin port serves it (addresses are protojson bytes).
const dumpOnWorker2 = `{
  "workloads": {
    "Kubernetes//Pod/default/productpage-v1": {"uid": "Kubernetes//Pod/default/productpage-v1", "name": "productpage-v1", "namespace": "default",
      "addresses": ["CvQBCg=="], "node": "worker-2", "tunnelProtocol": "HBONE"},
    "Kubernetes//Pod/kube-system/coredns-1": {"name": "coredns-1", "namespace": "kube-system", "addresses": ["CvQAAg=="], "node": "worker-1"}
  },
  "services": {}, "policies": {}, "certificates": [], "pods": [], "connections": [], "resource_versions": {}
}`

func inspectServer(t *testing.T) *kube.Clients {
	t.Helper()
	s := kubetest.NewServer(t, []corev1.Pod{
		meshPod("ztunnel-aaaaa", "ztunnel", "worker-1", "localhost/mesh/ztunnel:0.9.0"),
		meshPod("ztunnel-bbbbb", "ztunnel", "worker-2", "localhost/mesh/ztunnel:1.0.0"),
		meshPod("istiod-6d8f-x", "istiod", "worker-1", "localhost/mesh/istiod:1.0.0"),
	}, map[string]http.Handler{
		"istio-system/ztunnel-aaaaa:15000": serve(`{"workloads": {}}`),
		"istio-system/ztunnel-bbbbb:15000": serve(dumpOnWorker2),
		"istio-system/istiod-6d8f-x:15014": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/debug/connections":
				_, _ = w.Write([]byte(`{"connections": [{"id": 1, "node": "ztunnel~10.244.2.2~ztunnel-bbbbb.istio-system~istio-system.svc.cluster.local", "proxy_version": "1.28.0", "connected_at": "2026-11-22T05:00:00Z", "types": []}]}`))
			case "/debug/syncz":
				_, _ = w.Write([]byte(`{"proxies": [{"id": 1, "node": "x", "types": [{"type": "type.googleapis.com/istio.workload.Address", "status": "SYNCED"}, {"type": "type.googleapis.com/istio.security.Authorization", "status": "STALE"}]}]}`))
			default:
				http.NotFound(w, r)
			}
		}),
	})
	c, err := kube.NewClients(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestZtunnelConfigThroughPortForward(t *testing.T) {
	c := inspectServer(t)
	got, err := runWith(t, c, "ztunnel-config", "workloads", "--node", "worker-2", "-n", "default")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"NAMESPACE", "POD", "NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"},
		{"default", "productpage-v1", "10.244.1.10", "worker-2", "None", "HBONE"},
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != len(want) {
		t.Fatalf("output:\n%s", got)
	}
	for i, l := range lines {
		if strings.Join(strings.Fields(l), " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d = %q, want %q", i, l, want[i])
		}
	}
	// By name; the first ztunnel by default.
	got, err = runWith(t, c, "ztunnel-config", "workloads", "ztunnel-bbbbb.istio-system")
	if err != nil || !strings.Contains(got, "coredns-1") {
		t.Fatalf("by name: %v\n%s", err, got)
	}
	got, err = runWith(t, c, "ztunnel-config", "all")
	if err != nil || strings.Contains(got, "coredns-1") {
		t.Fatalf("default ztunnel should be ztunnel-aaaaa (empty dump): %v\n%s", err, got)
	}
	_, err = runWith(t, c, "ztunnel-config", "workloads", "--node", "worker-9")
	if err == nil || !strings.Contains(err.Error(), `no ztunnel pod on node "worker-9" (ztunnel runs on: worker-1, worker-2)`) {
		t.Fatalf("error %v", err)
	}
}

func TestProxyStatusAndVersion(t *testing.T) {
	c := inspectServer(t)
	got, err := runWith(t, c, "proxy-status")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "ztunnel-bbbbb.istio-system Kubernetes istiod-6d8f-x 1.28.0 SYNCED STALE" {
		t.Fatalf("proxy-status:\n%s", got)
	}
	got, err = runWith(t, c, "version")
	if err != nil {
		t.Fatal(err)
	}
	want := `client version: dev
control plane version: 1.0.0 (1 pod)
ztunnel version: 0.9.0 (1 pod), 1.0.0 (1 pod)
data plane version: 1.28.0 (1 proxy)
`
	if got != want {
		t.Fatalf("version:\n%s\nwant:\n%s", got, want)
	}
}
