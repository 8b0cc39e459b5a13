package kube

import (
	"context"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube/kubetest"
)

var runningPod = &corev1.Pod{
	ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-a", Namespace: "istio-system"},
	Status:     corev1.PodStatus{Phase: corev1.PodRunning},
}

func clientFor(t *testing.T, s *kubetest.Server) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	cfg := s.Config()
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, kc
}

func TestPodGet(t *testing.T) {
	body := `{"workloads": {}}` + strings.Repeat(" ", 70000)
	s := kubetest.NewServer(t, nil, map[string]http.Handler{
		"istio-system/ztunnel-a:15000": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/config_dump" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte(body))
		}),
	})
	cfg, kc := clientFor(t, s)
	got, err := PodGet(context.Background(), cfg, kc, runningPod, 15000, "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != body {
		t.Fatalf("body %q..., want %q...", got[:20], body[:20])
	}
	_, err = PodGet(context.Background(), cfg, kc, runningPod, 15000, "/nope")
	if err == nil || !strings.Contains(err.Error(), "GET /nope on pod istio-system/ztunnel-a port 15000: 404 Not Found") {
		t.Fatalf("error %v", err)
	}
}

func TestPodGetForwardError(t *testing.T) {
	s := kubetest.NewServer(t, nil, nil)
	cfg, kc := clientFor(t, s)
	_, err := PodGet(context.Background(), cfg, kc, runningPod, 15000, "/config_dump")
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "istio-system/ztunnel-a port 15000") {
		t.Fatalf("error %v", err)
	}
}

func TestPodGetUnauthorized(t *testing.T) {
	s := kubetest.NewServer(t, nil, nil)
	cfg, kc := clientFor(t, s)
	cfg.BearerToken = "wrong"
	_, err := PodGet(context.Background(), cfg, kc, runningPod, 15000, "/config_dump")
	if err == nil || !strings.Contains(err.Error(), "port-forward to /api/v1/namespaces/istio-system/pods/ztunnel-a/portforward: the API server answered 401 Unauthorized: Unauthorized") {
		t.Fatalf("error %v", err)
	}
}

func TestPodGetNotRunning(t *testing.T) {
	p := runningPod.DeepCopy()
	p.Status.Phase = corev1.PodPending
	_, err := PodGet(context.Background(), &rest.Config{}, nil, p, 15000, "/config_dump")
	if err == nil || err.Error() != "pod istio-system/ztunnel-a is Pending, not Running" {
		t.Fatalf("error %v", err)
	}
}
