package controller

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/bootstrap"
	"github.com/ambient-mesh/mesh/istiod/internal/workloads"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func namespace(name string, ambient bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ambient {
		ns.Labels = map[string]string{workloads.LabelDataplaneMode: workloads.DataplaneModeAmbient}
	}
	return ns
}

func pod(ns, name, ip, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name, Containers: []corev1.Container{{
			Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func service(ns, name, ip string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}, Selector: selector,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}},
	}
}

// fixture runs a controller on fake clientsets holding objs.
type fixture struct {
	t       testing.TB
	client  *fake.Clientset
	istio   *istiofake.Clientset
	gateway *gwfake.Clientset
	cache   *ads.Cache
	ctl     *Controller
}

// noWatchList tells informers that the fake cannot stream lists: it never
// sends the bookmark that ends one, so an informer would wait forever.
type noWatchList struct{ *istiofake.Clientset }

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// options of a fixture. The zero value serves both custom resources.
type options struct {
	noCRDs bool
	log    *slog.Logger
}

func start(t testing.TB, objs ...runtime.Object) *fixture {
	t.Helper()
	return startWith(t, options{}, objs...)
}

func startWith(t testing.TB, o options, objs ...runtime.Object) *fixture {
	t.Helper()
	var kube, istio, gws []runtime.Object
	for _, obj := range objs {
		switch obj.(type) {
		case *networkingv1.ServiceEntry:
			istio = append(istio, obj)
		case *gatewayv1.Gateway:
			gws = append(gws, obj)
		default:
			kube = append(kube, obj)
		}
	}
	// The field-managed gwfake.NewClientset rejects creating Gateways (its
	// type converter lacks them), so the simple tracker it replaces is used.
	//lint:ignore SA1019 NewClientset cannot create Gateways.
	gw := gwfake.NewSimpleClientset()
	// Gateways are created through the v1 client: given to the constructor,
	// the tracker files them under another version of the same Go type.
	for _, obj := range gws {
		g := obj.(*gatewayv1.Gateway)
		if _, err := gw.GatewayV1().Gateways(g.Namespace).Create(context.Background(), g, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{t: t, client: fake.NewClientset(kube...), istio: istiofake.NewSimpleClientset(istio...), gateway: gw}
	want := []string{"pods", "services", "namespaces", "endpointslices"}
	if !o.noCRDs {
		f.client.Resources = []*metav1.APIResourceList{
			{GroupVersion: serviceEntryGroupVersion, APIResources: []metav1.APIResource{{Name: serviceEntryResource, Kind: "ServiceEntry", Namespaced: true}}},
			{GroupVersion: gatewayGroupVersion, APIResources: []metav1.APIResource{{Name: gatewayResource, Kind: "Gateway", Namespaced: true}}},
		}
		want = append(want, serviceEntryResource, gatewayResource)
	}
	// The fake clientsets drop events between an informer's list and its
	// watch, so the test mutates only once every watch is open.
	var mu sync.Mutex
	watching := map[string]bool{}
	reactor := func(a k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		watching[a.GetResource().Resource] = true
		mu.Unlock()
		return false, nil, nil
	}
	f.client.PrependWatchReactor("*", reactor)
	f.istio.PrependWatchReactor("*", reactor)
	f.gateway.PrependWatchReactor("*", reactor)
	f.cache = ads.NewCache()
	ctl, err := New(&bootstrap.Clients{Kube: f.client, Istio: noWatchList{f.istio}, Gateway: f.gateway}, f.cache, workloads.MeshConfig{}, o.log)
	if err != nil {
		t.Fatal(err)
	}
	f.ctl = ctl
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	f.wait("synced and watching", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range want {
			if !watching[r] {
				return false
			}
		}
		return ctl.HasSynced()
	})
	return f
}

func (f *fixture) wait(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: not within 10s; cache holds %v", what, f.cache.Names(AddressType))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// contents decodes the whole cache.
func (f *fixture) contents() map[string]*workloadapi.Address {
	out := map[string]*workloadapi.Address{}
	for _, n := range f.cache.Names(AddressType) {
		_, body, ok := f.cache.Get(AddressType, n)
		if !ok {
			continue
		}
		a := &workloadapi.Address{}
		if err := body.UnmarshalTo(a); err != nil {
			f.t.Fatalf("%s: %v", n, err)
		}
		out[n] = a
	}
	return out
}

// waitContents waits until the cache holds exactly want.
func (f *fixture) waitContents(want map[string]*workloadapi.Address) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := f.contents()
		if maps.EqualFunc(got, want, func(a, b *workloadapi.Address) bool { return proto.Equal(a, b) }) {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("cache holds %v, want %v\ngot:  %v\nwant: %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)), got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wl(t *testing.T, p *corev1.Pod, ns *corev1.Namespace, svcs ...*corev1.Service) (string, *workloadapi.Address) {
	t.Helper()
	return wlIn(t, p, workloads.Inputs{Namespace: ns, Services: svcs})
}

func wlIn(t *testing.T, p *corev1.Pod, in workloads.Inputs) (string, *workloadapi.Address) {
	t.Helper()
	w := workloads.Workload(p, in)
	if w == nil {
		t.Fatalf("pod %s/%s does not translate", p.Namespace, p.Name)
	}
	a := &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	return workloads.ResourceName(a), a
}

func sv(t *testing.T, s *corev1.Service, ns *corev1.Namespace) (string, *workloadapi.Address) {
	t.Helper()
	return svIn(t, s, workloads.Inputs{Namespace: ns})
}

func svIn(t *testing.T, s *corev1.Service, in workloads.Inputs) (string, *workloadapi.Address) {
	t.Helper()
	out, _ := workloads.Service(s, in)
	if out == nil {
		t.Fatalf("service %s/%s does not translate", s.Namespace, s.Name)
	}
	a := &workloadapi.Address{Type: &workloadapi.Address_Service{Service: out}}
	return workloads.ResourceName(a), a
}

func TestInitialContents(t *testing.T) {
	amb, plain := namespace("amb", true), namespace("plain", false)
	a := pod("amb", "a", "10.0.0.1", "node1", map[string]string{"app": "a"})
	b := pod("plain", "b", "10.0.0.2", "node2", nil)
	pending := pod("amb", "pending", "", "", nil) // no IP yet: skipped
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	host := pod("amb", "host", "10.9.9.9", "node1", nil) // host network: skipped
	host.Spec.HostNetwork = true
	svc := service("amb", "svc", "10.96.0.10", map[string]string{"app": "a"})
	ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "amb", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}

	f := start(t, amb, plain, a, b, pending, host, svc, ext)

	want := map[string]*workloadapi.Address{}
	for _, kv := range []func() (string, *workloadapi.Address){
		func() (string, *workloadapi.Address) { return wl(t, a, amb, svc) },
		func() (string, *workloadapi.Address) { return wl(t, b, plain) },
		func() (string, *workloadapi.Address) { return sv(t, svc, amb) },
	} {
		n, addr := kv()
		want[n] = addr
	}
	f.waitContents(want)

	got := f.contents()
	wa := got["Kubernetes//Pod/amb/a"].GetWorkload()
	if wa.GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE || wa.GetNode() != "node1" || wa.GetServiceAccount() != "sa-a" {
		t.Errorf("workload a: %v", wa)
	}
	if _, ok := wa.GetServices()["amb/svc.amb.svc.cluster.local"]; !ok {
		t.Errorf("workload a lacks its service entry: %v", wa.GetServices())
	}
	if p := got["Kubernetes//Pod/plain/b"].GetWorkload().GetTunnelProtocol(); p != workloadapi.TunnelProtocol_NONE {
		t.Errorf("workload b tunnel protocol %v, want NONE", p)
	}
}

func TestPodDeleteRemovesResource(t *testing.T) {
	ns := namespace("amb", true)
	a, b := pod("amb", "a", "10.0.0.1", "n", nil), pod("amb", "b", "10.0.0.2", "n", nil)
	f := start(t, ns, a, b)
	na, wa := wl(t, a, ns)
	nb, wb := wl(t, b, ns)
	f.waitContents(map[string]*workloadapi.Address{na: wa, nb: wb})

	if err := f.client.CoreV1().Pods("amb").Delete(t.Context(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitContents(map[string]*workloadapi.Address{nb: wb})
}

func TestNamespaceRelabelFlipsTunnelProtocol(t *testing.T) {
	ns := namespace("ns1", false)
	a := pod("ns1", "a", "10.0.0.1", "n", nil)
	f := start(t, ns, a)
	n, w := wl(t, a, ns)
	if w.GetWorkload().GetTunnelProtocol() != workloadapi.TunnelProtocol_NONE {
		t.Fatalf("before relabel: %v", w)
	}
	f.waitContents(map[string]*workloadapi.Address{n: w})

	amb := namespace("ns1", true)
	if _, err := f.client.CoreV1().Namespaces().Update(t.Context(), amb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, w = wl(t, a, amb)
	if w.GetWorkload().GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE {
		t.Fatalf("after relabel: %v", w)
	}
	f.waitContents(map[string]*workloadapi.Address{n: w})

	// And back.
	if _, err := f.client.CoreV1().Namespaces().Update(t.Context(), namespace("ns1", false), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, w = wl(t, a, ns)
	f.waitContents(map[string]*workloadapi.Address{n: w})
}

func TestServiceSelectingPodAddsEntry(t *testing.T) {
	ns := namespace("amb", true)
	a := pod("amb", "a", "10.0.0.1", "n", map[string]string{"app": "a"})
	other := pod("amb", "other", "10.0.0.2", "n", map[string]string{"app": "other"})
	f := start(t, ns, a, other)
	na, wa := wl(t, a, ns)
	no, wo := wl(t, other, ns)
	f.waitContents(map[string]*workloadapi.Address{na: wa, no: wo})

	svc := service("amb", "svc", "10.96.0.10", map[string]string{"app": "a"})
	if _, err := f.client.CoreV1().Services("amb").Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns1, s := sv(t, svc, ns)
	_, wa = wl(t, a, ns, svc)
	if wa.GetWorkload().GetServices()["amb/svc.amb.svc.cluster.local"].GetPorts()[0].GetTargetPort() != 8080 {
		t.Fatalf("expected workload lacks the service entry: %v", wa)
	}
	f.waitContents(map[string]*workloadapi.Address{na: wa, no: wo, ns1: s})

	// Deleting the Service removes it and the entry.
	if err := f.client.CoreV1().Services("amb").Delete(t.Context(), "svc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, wa = wl(t, a, ns)
	f.waitContents(map[string]*workloadapi.Address{na: wa, no: wo})
}

func TestPodUpdateChangesOnlyItsResource(t *testing.T) {
	ns := namespace("amb", true)
	a, b := pod("amb", "a", "10.0.0.1", "n", nil), pod("amb", "b", "10.0.0.2", "n", nil)
	f := start(t, ns, a, b)
	na, wa := wl(t, a, ns)
	nb, wb := wl(t, b, ns)
	f.waitContents(map[string]*workloadapi.Address{na: wa, nb: wb})
	vb, _, _ := f.cache.Get(AddressType, nb)

	a2 := a.DeepCopy()
	a2.Status.Conditions = nil // not ready
	if _, err := f.client.CoreV1().Pods("amb").UpdateStatus(t.Context(), a2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, wa = wl(t, a2, ns)
	if wa.GetWorkload().GetStatus() != workloadapi.WorkloadStatus_UNHEALTHY {
		t.Fatalf("expected status: %v", wa)
	}
	f.waitContents(map[string]*workloadapi.Address{na: wa, nb: wb})
	if v, _, _ := f.cache.Get(AddressType, nb); v != vb {
		t.Errorf("untouched pod b changed version %s -> %s", vb, v)
	}
}

// TestNodeZoneBecomesLocality: a pod's workload carries its node's
// topology labels, and relabelling the node recomputes the node's pods
// only.
func TestNodeZoneBecomesLocality(t *testing.T) {
	ns := namespace("loc", true)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{workloads.LabelZone: "zone-a"}}}
	a := pod("loc", "a", "10.0.0.1", "n1", nil)
	b := pod("loc", "b", "10.0.0.2", "n2", nil)
	f := start(t, ns, node, a, b)
	na, wa := wlIn(t, a, workloads.Inputs{Namespace: ns, Node: node})
	nb, wb := wl(t, b, ns)
	if wa.GetWorkload().GetLocality().GetZone() != "zone-a" {
		t.Fatalf("locality %v", wa.GetWorkload().GetLocality())
	}
	f.waitContents(map[string]*workloadapi.Address{na: wa, nb: wb})

	before := f.ctl.Translations()
	moved := node.DeepCopy()
	moved.Labels[workloads.LabelZone] = "zone-b"
	if _, err := f.client.CoreV1().Nodes().Update(t.Context(), moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, wa = wlIn(t, a, workloads.Inputs{Namespace: ns, Node: moved})
	f.waitContents(map[string]*workloadapi.Address{na: wa, nb: wb})
	if got := f.ctl.Translations() - before; got != 1 {
		t.Errorf("a node relabel made %d translations, want 1 (its one pod)", got)
	}
}
