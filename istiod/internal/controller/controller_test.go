package controller

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
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

// fixture runs a controller on a fake clientset holding objs.
type fixture struct {
	t      *testing.T
	client *fake.Clientset
	cache  *ads.Cache
	ctl    *Controller
}

func start(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	// The fake clientset drops events between an informer's list and its
	// watch, so the test mutates only once all three watches are open.
	var mu sync.Mutex
	watching := map[string]bool{}
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		watching[a.GetResource().Resource] = true
		mu.Unlock()
		return false, nil, nil
	})
	c := ads.NewCache()
	ctl, err := New(client, c, workloads.MeshConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	f := &fixture{t: t, client: client, cache: c, ctl: ctl}
	f.wait("synced and watching", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ctl.HasSynced() && watching["pods"] && watching["services"] && watching["namespaces"]
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
	w, ok := workloads.Workload(p, ns, svcs, workloads.MeshConfig{})
	if !ok {
		t.Fatalf("pod %s/%s does not translate", p.Namespace, p.Name)
	}
	a := &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	return workloads.ResourceName(a), a
}

func sv(t *testing.T, s *corev1.Service, ns *corev1.Namespace) (string, *workloadapi.Address) {
	t.Helper()
	out, ok := workloads.Service(s, ns, workloads.MeshConfig{})
	if !ok {
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
