package install

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
)

func fakeInstaller(objs []runtime.Object, dyn ...runtime.Object) (*Installer, *bytes.Buffer) {
	var out bytes.Buffer
	scheme := runtime.NewScheme()
	dc := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{crdGVR: "CustomResourceDefinitionList"}, dyn...)
	return &Installer{
		Clients:   &kube.Clients{Kube: fake.NewClientset(objs...), Dynamic: dc},
		Namespace: "istio-system",
		Timeout:   300 * time.Millisecond,
		Poll:      20 * time.Millisecond,
		Out:       &out,
	}, &out
}

func ztunnelDS(ready int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Namespace: "istio-system", Generation: 1},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}}},
		Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2,
			NumberReady: ready, NumberAvailable: ready},
	}
}

func TestWaitReadyTimesOutNamingThePod(t *testing.T) {
	stuck := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-stuck", Namespace: "istio-system", Labels: map[string]string{"app": "ztunnel"}},
		Spec:       corev1.PodSpec{NodeName: "worker-2"},
		Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "istio-proxy",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "manifest unknown"}}}}},
	}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "istiod-x", Namespace: "istio-system", Labels: map[string]string{"app": "istiod"}}}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "istio-system"},
		Type:       corev1.EventTypeWarning, Reason: "Failed", Message: "Error: ErrImagePull",
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "ztunnel-stuck", Namespace: "istio-system"},
	}
	in, out := fakeInstaller([]runtime.Object{ztunnelDS(1), stuck, other, ev})
	err := in.waitReady(context.Background(), "ztunnel", []Object{{Kind: "DaemonSet", Name: "ztunnel", Namespace: "istio-system"}})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"ztunnel: timed out after 300ms waiting for readiness:",
		"daemonset/ztunnel is not ready: 1/2 ready, 1/2 available",
		"pod ztunnel-stuck (worker-2): Pending",
		"container istio-proxy: waiting: ErrImagePull: manifest unknown",
		"pod/ztunnel-stuck: Failed: Error: ErrImagePull",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "istiod-x") {
		t.Errorf("error names another workload's pod:\n%v", err)
	}
	if got := out.String(); got != "  waiting for daemonset/ztunnel: 1/2 ready, 1/2 available\n" {
		t.Errorf("progress %q", got)
	}
}

func TestWaitReadyDone(t *testing.T) {
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "gateways.gateway.networking.k8s.io"},
		"status":   map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}},
	}}
	in, out := fakeInstaller([]runtime.Object{ztunnelDS(2)}, crd)
	err := in.waitReady(context.Background(), "ztunnel", []Object{
		{Kind: "DaemonSet", Name: "ztunnel", Namespace: "istio-system"},
		{Kind: "CustomResourceDefinition", Name: "gateways.gateway.networking.k8s.io"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("progress printed for ready objects: %q", out.String())
	}
}

func TestWaitReadyMissingObject(t *testing.T) {
	in, _ := fakeInstaller(nil)
	err := in.waitReady(context.Background(), "istiod", []Object{{Kind: "Deployment", Name: "istiod", Namespace: "istio-system"}})
	if err == nil || !strings.Contains(err.Error(), "deployment/istiod is not ready: 0/0 ready, not found") {
		t.Fatalf("error %v", err)
	}
}

func TestWaitPodsGone(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "istio-cni-node-a", Namespace: "istio-system", Labels: map[string]string{"app": "istio-cni-node"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	in, out := fakeInstaller([]runtime.Object{p})
	sels := map[Object]string{{Kind: "DaemonSet", Name: "istio-cni-node"}: "app=istio-cni-node"}
	err := in.waitPodsGone(context.Background(), "istio-cni", "istio-system", sels)
	if err == nil || !strings.Contains(err.Error(), "istio-cni: timed out after 300ms waiting for pods to go: istio-cni-node-a (daemonset/istio-cni-node, Running)") {
		t.Fatalf("error %v", err)
	}
	if !strings.Contains(out.String(), "waiting for 1 pods of daemonset/istio-cni-node to go") {
		t.Fatalf("progress %q", out.String())
	}
	if err := in.Clients.Kube.CoreV1().Pods("istio-system").Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := in.waitPodsGone(context.Background(), "istio-cni", "istio-system", sels); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReadyCRDsOnOneLine(t *testing.T) {
	var objs []Object
	var dyn []runtime.Object
	for _, n := range []string{"a.x.io", "b.x.io", "c.x.io", "d.x.io", "e.x.io", "f.x.io", "g.x.io"} {
		objs = append(objs, Object{Kind: "CustomResourceDefinition", Name: n})
		status := "False"
		if n == "a.x.io" {
			status = "True"
		}
		dyn = append(dyn, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": n},
			"status":   map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": status}}},
		}})
	}
	in, out := fakeInstaller(nil, dyn...)
	err := in.waitReady(context.Background(), "base", objs)
	if got := out.String(); got != "  waiting for CRDs: 1/7 established\n" {
		t.Errorf("progress %q", got)
	}
	if err == nil || !strings.Contains(err.Error(), "customresourcedefinition/b.x.io is not ready: 0/1 ready, not Established yet") ||
		!strings.Contains(err.Error(), "and 1 more CRDs not established") || strings.Contains(err.Error(), "g.x.io") {
		t.Fatalf("error %v", err)
	}
}
