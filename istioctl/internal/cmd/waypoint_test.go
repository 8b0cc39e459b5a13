package cmd

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/waypoint"
)

func runWith(t *testing.T, c *kube.Clients, args ...string) (string, error) {
	t.Helper()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	flags := kube.NewFlags()
	flags.ClientsFunc = func() (*kube.Clients, error) { return c, nil }
	root := newRoot(flags)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func fakeClients(kubeObjs []runtime.Object, gateways ...*unstructured.Unstructured) *kube.Clients {
	scheme := runtime.NewScheme()
	dc := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{waypoint.GatewayGVR: "GatewayList"})
	for _, g := range gateways {
		if _, err := dc.Resource(waypoint.GatewayGVR).Namespace(g.GetNamespace()).Create(context.Background(), g, metav1.CreateOptions{}); err != nil {
			panic(err)
		}
	}
	return &kube.Clients{Kube: fake.NewClientset(kubeObjs...), Dynamic: dc}
}

func TestWaypointGenerateNamespace(t *testing.T) {
	got, err := run(t, "waypoint", "generate", "-n", "bookinfo", "--name", "reviews-wp", "--for", "workload")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: reviews-wp", "namespace: bookinfo", "istio.io/waypoint-for: workload", "gatewayClassName: istio-waypoint", "port: 15008", "protocol: HBONE"} {
		if !strings.Contains(got, want) {
			t.Errorf("generate output lacks %q:\n%s", want, got)
		}
	}
	if _, err := run(t, "waypoint", "generate", "--name", "none"); err == nil {
		t.Error(`name "none" accepted`)
	}
}

func TestWaypointEnrollRefusesWithoutOverwrite(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Labels: map[string]string{waypoint.LabelUseWaypoint: "old-wp"}}}
	c := fakeClients([]runtime.Object{ns})
	_, err := runWith(t, c, "waypoint", "apply", "-n", "bookinfo", "--enroll-namespace")
	if err == nil || !strings.Contains(err.Error(), `namespace bookinfo already uses waypoint "old-wp"`) {
		t.Fatalf("error %v", err)
	}
	// Nothing was applied.
	if l, _ := c.Dynamic.Resource(waypoint.GatewayGVR).Namespace("bookinfo").List(context.Background(), metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("a gateway was applied despite the refusal")
	}
}

func TestWaypointListAndDeleteAll(t *testing.T) {
	wp1 := waypoint.Gateway("waypoint", "bookinfo", "service")
	wp2 := waypoint.Gateway("reviews-wp", "bookinfo", "workload")
	ingress := waypoint.Gateway("ingress", "bookinfo", "service")
	_ = unstructured.SetNestedField(ingress.Object, "istio", "spec", "gatewayClassName")
	elsewhere := waypoint.Gateway("waypoint", "other", "service")
	c := fakeClients(nil, wp1, wp2, ingress, elsewhere)

	got, err := runWith(t, c, "waypoint", "list", "-A")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "ingress") || !strings.Contains(got, "other") || !strings.Contains(got, "reviews-wp") {
		t.Fatalf("list -A:\n%s", got)
	}

	_, err = runWith(t, c, "waypoint", "delete", "-n", "bookinfo", "ingress")
	if err == nil || !strings.Contains(err.Error(), `gateway bookinfo/ingress is not a waypoint (class "istio", not "istio-waypoint"); not deleted`) {
		t.Fatalf("delete of a non-waypoint: %v", err)
	}
	got, err = runWith(t, c, "waypoint", "delete", "-n", "bookinfo", "--all")
	if err != nil {
		t.Fatal(err)
	}
	if got != "waypoint bookinfo/reviews-wp deleted\nwaypoint bookinfo/waypoint deleted\n" && got != "waypoint bookinfo/waypoint deleted\nwaypoint bookinfo/reviews-wp deleted\n" {
		t.Fatalf("delete --all output %q", got)
	}
	got, err = runWith(t, c, "waypoint", "list", "-n", "bookinfo")
	if err != nil || got != "No waypoints found.\n" {
		t.Fatalf("list after delete: %q, %v", got, err)
	}
	if _, err := c.Dynamic.Resource(waypoint.GatewayGVR).Namespace("bookinfo").Get(context.Background(), "ingress", metav1.GetOptions{}); err != nil {
		t.Fatalf("the non-waypoint gateway was deleted: %v", err)
	}
}

func TestWaypointApplyEnrolls(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo"}}
	c := fakeClients([]runtime.Object{ns})
	got, err := runWith(t, c, "waypoint", "apply", "-n", "bookinfo", "--enroll-namespace")
	if err != nil {
		t.Fatal(err)
	}
	want := "✅ waypoint bookinfo/waypoint applied\n✅ namespace bookinfo labeled with \"istio.io/use-waypoint: waypoint\"\n"
	if got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	gw, err := c.Dynamic.Resource(waypoint.GatewayGVR).Namespace("bookinfo").Get(context.Background(), "waypoint", metav1.GetOptions{})
	if err != nil || !waypoint.IsWaypoint(gw) {
		t.Fatalf("gateway %v, %v", gw, err)
	}
	n, err := c.Kube.CoreV1().Namespaces().Get(context.Background(), "bookinfo", metav1.GetOptions{})
	if err != nil || n.Labels[waypoint.LabelUseWaypoint] != "waypoint" {
		t.Fatalf("namespace labels %v, %v", n.Labels, err)
	}
}

func TestWaypointApplyUpdates(t *testing.T) {
	old := waypoint.Gateway("waypoint", "bookinfo", "service")
	old.SetAnnotations(map[string]string{"note": "keep me"})
	c := fakeClients(nil, old)
	if _, err := runWith(t, c, "waypoint", "apply", "-n", "bookinfo", "--for", "all"); err != nil {
		t.Fatal(err)
	}
	gw, err := c.Dynamic.Resource(waypoint.GatewayGVR).Namespace("bookinfo").Get(context.Background(), "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gw.GetLabels()[waypoint.LabelWaypointFor] != "all" || gw.GetAnnotations()["note"] != "keep me" {
		t.Fatalf("updated gateway labels %v annotations %v", gw.GetLabels(), gw.GetAnnotations())
	}
	ingress := waypoint.Gateway("ingress", "bookinfo", "service")
	_ = unstructured.SetNestedField(ingress.Object, "istio", "spec", "gatewayClassName")
	c = fakeClients(nil, ingress)
	_, err = runWith(t, c, "waypoint", "apply", "-n", "bookinfo", "--name", "ingress")
	if err == nil || !strings.Contains(err.Error(), `apply waypoint bookinfo/ingress: a gateway of class "istio" has that name; not replaced`) {
		t.Fatalf("error %v", err)
	}
}
