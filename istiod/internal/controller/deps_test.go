package controller

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/istiod/internal/workloads"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// quiesce waits until the queue is empty and no translation happened for
// a while, and returns the translation count.
func (f *fixture) quiesce() int64 {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := f.ctl.Translations()
	stable := time.Now()
	for {
		time.Sleep(10 * time.Millisecond)
		n := f.ctl.Translations()
		if n != last || f.ctl.queue.Len() != 0 {
			last, stable = n, time.Now()
		}
		if time.Since(stable) > 150*time.Millisecond {
			return last
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("translations did not settle; at %d", n)
		}
	}
}

// translated waits for the work a change caused and fails unless it was
// exactly want translations after base.
func (f *fixture) translated(what string, base, want int64) int64 {
	f.t.Helper()
	f.wait(what, func() bool { return f.ctl.Translations() >= base+want })
	got := f.quiesce()
	if got-base != want {
		f.t.Errorf("%s: %d translations, want %d", what, got-base, want)
	}
	return got
}

// scaleObjects is one ambient namespace "big" with services svc-i, each
// selecting its own podsPer pods.
func scaleObjects(services, podsPer int) []runtime.Object {
	objs := []runtime.Object{namespace("big", true)}
	for i := range services {
		app := map[string]string{"app": fmt.Sprintf("app-%d", i)}
		objs = append(objs, service("big", fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), app))
		for j := range podsPer {
			objs = append(objs, pod("big", fmt.Sprintf("p-%d-%d", i, j), fmt.Sprintf("10.1.%d.%d", i/50, (i%50)*5+j+1), "n", app))
		}
	}
	return objs
}

// TestServiceChangeTranslatesOnlySelectedPods checks that, with 1,000
// Services of 5 pods each in one namespace, a Service change recomputes the
// Service and the pods it selects, not the namespace.
func TestServiceChangeTranslatesOnlySelectedPods(t *testing.T) {
	const services, podsPer = 1000, 5
	f := start(t, scaleObjects(services, podsPer)...)
	base := f.quiesce()
	t.Logf("initial sync: %d translations for %d pods and %d services", base, services*podsPer, services)
	if base > 2*int64(services*(podsPer+1)) {
		t.Errorf("initial sync took %d translations for %d objects", base, services*(podsPer+1))
	}
	ctx := t.Context()
	svcs := f.client.CoreV1().Services("big")

	extra := service("big", "extra", "10.97.0.1", map[string]string{"app": "app-7"})
	if _, err := svcs.Create(ctx, extra, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	base = f.translated("create a service of 5 pods", base, 1+podsPer)
	w := f.contents()["Kubernetes//Pod/big/p-7-0"].GetWorkload()
	if _, ok := w.GetServices()["big/extra.big.svc.cluster.local"]; !ok {
		t.Fatalf("selected pod lacks the new service: %v", w.GetServices())
	}

	s3, err := svcs.Get(ctx, "svc-3", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s3.Labels = map[string]string{"team": "a"}
	if s3, err = svcs.Update(ctx, s3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	base = f.translated("relabel a service", base, 1)

	s3.Spec.Selector = map[string]string{"app": "app-4"}
	if _, err := svcs.Update(ctx, s3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	base = f.translated("move a service's selector", base, 1+2*podsPer)

	if err := svcs.Delete(ctx, "svc-5", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.translated("delete a service", base, 1+podsPer)
}

// BenchmarkServiceChange updates one Service's ports per iteration in a
// namespace of 1,000 Services of 5 pods each, and reports the translations
// each change caused (the Service and its 5 pods: 6).
func BenchmarkServiceChange(b *testing.B) {
	const services, podsPer = 1000, 5
	f := start(b, scaleObjects(services, podsPer)...)
	base := f.quiesce()
	svcs := f.client.CoreV1().Services("big")
	ctx := b.Context()
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("svc-%d", i%services)
		s, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s.Spec.Ports[0].Port++
		if _, err := svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		want := base + int64(i+1)*(1+podsPer)
		f.wait("translations", func() bool { return f.ctl.Translations() >= want })
		i++
	}
	b.StopTimer()
	got := f.quiesce() - base
	b.ReportMetric(float64(got)/float64(i), "translations/op")
}

func TestNamespaceLabelsTranslateOnlyWhatReadsThem(t *testing.T) {
	ns := namespace("amb", false)
	a := pod("amb", "a", "10.0.0.1", "n", map[string]string{"app": "a"})
	b := pod("amb", "b", "10.0.0.2", "n", nil)
	svc := service("amb", "svc", "10.96.0.10", map[string]string{"app": "a"})
	f := start(t, ns, a, b, svc)
	base := f.quiesce()
	ctx := t.Context()
	update := func(l map[string]string) {
		t.Helper()
		n := namespace("amb", false)
		n.Labels = l
		if _, err := f.client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	update(map[string]string{"team": "x"})
	time.Sleep(200 * time.Millisecond)
	base = f.translated("unrelated label", base, 0)

	update(map[string]string{"team": "x", workloads.LabelDataplaneMode: workloads.DataplaneModeAmbient})
	base = f.translated("dataplane mode", base, 2) // the pods only

	update(map[string]string{workloads.LabelDataplaneMode: workloads.DataplaneModeAmbient, workloads.LabelUseWaypoint: "wp"})
	f.translated("waypoint", base, 3) // pods and the service
}

func waypointGW(ns, name, waypointFor, ip string) *gatewayv1.Gateway {
	t := gatewayv1.IPAddressType
	g := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: workloads.WaypointClassName,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}},
		},
	}
	if ip != "" {
		g.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Type: &t, Value: ip}}
	}
	if waypointFor != "" {
		g.Labels = map[string]string{workloads.LabelWaypointFor: waypointFor}
	}
	return g
}

func getter(gws ...*gatewayv1.Gateway) workloads.GatewayGetter {
	return func(namespace, name string) *gatewayv1.Gateway {
		for _, g := range gws {
			if g.Namespace == namespace && g.Name == name {
				return g
			}
		}
		return nil
	}
}

func TestGatewayWaypoint(t *testing.T) {
	ns := namespace("amb", true)
	ns.Labels[workloads.LabelUseWaypoint] = "wp"
	a := pod("amb", "a", "10.0.0.1", "n", map[string]string{"app": "a"})
	optOut := pod("amb", "b", "10.0.0.2", "n", map[string]string{workloads.LabelUseWaypoint: workloads.WaypointNone})
	s1 := service("amb", "s1", "10.96.0.1", map[string]string{"app": "a"})
	s2 := service("amb", "s2", "10.96.0.2", nil)
	s2.Labels = map[string]string{workloads.LabelUseWaypoint: "own"}
	// The waypoint's own pod and Service, as its deployment labels them.
	managed := map[string]string{workloads.LabelGatewayManaged: workloads.ManagedByMeshController, workloads.LabelGatewayName: "wp"}
	wpPod := pod("amb", "wp-0", "10.0.0.9", "n", managed)
	wpSvc := service("amb", "wp", "10.96.9.9", managed)
	wpSvc.Labels = managed

	var logs syncBuffer
	f := startWith(t, options{log: slog.New(slog.NewTextHandler(&logs, nil))}, ns, a, optOut, s1, s2, wpPod, wpSvc)
	want := func(gws ...*gatewayv1.Gateway) map[string]*workloadapi.Address {
		in := workloads.Inputs{Namespace: ns, Gateways: getter(gws...)}
		out := map[string]*workloadapi.Address{}
		for _, p := range []*corev1.Pod{a, optOut, wpPod} {
			in.Services = []*corev1.Service{s1, s2, wpSvc}
			n, w := wlIn(t, p, in)
			out[n] = w
		}
		for _, s := range []*corev1.Service{s1, s2, wpSvc} {
			n, w := svIn(t, s, in)
			out[n] = w
		}
		return out
	}
	f.waitContents(want())
	got := f.contents()
	if wp := got["amb/s1.amb.svc.cluster.local"].GetService().GetWaypoint().GetHostname().GetHostname(); wp != "wp.amb.svc.cluster.local" {
		t.Errorf("s1 before its waypoint exists points at %q, want the waypoint's service name", wp)
	}
	if !strings.Contains(logs.String(), "gateway not found") {
		t.Errorf("the missing waypoint is not explained in the log:\n%s", logs.String())
	}
	base := f.quiesce()
	ctx := t.Context()
	gws := f.gateway.GatewayV1().Gateways("amb")

	gw := waypointGW("amb", "wp", workloads.WaypointForAll, "10.96.9.9")
	if _, err := gws.Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitContents(want(gw))
	// Users: s1 and pod a through the namespace; the opted-out pod, s2
	// (its own waypoint) and the waypoint's own objects do not read it,
	// but wp-0 and the wp Service do inherit the namespace label, so they
	// are recomputed (to the same bytes).
	base = f.translated("gateway created", base, 4)
	got = f.contents()
	if ip := got["amb/s1.amb.svc.cluster.local"].GetService().GetWaypoint().GetAddress().GetAddress(); !bytes.Equal(ip, []byte{10, 96, 9, 9}) {
		t.Errorf("s1 waypoint address %v, want 10.96.9.9", ip)
	}
	if wp := got["Kubernetes//Pod/amb/wp-0"].GetWorkload().GetWaypoint(); wp != nil {
		t.Errorf("the waypoint's pod points at %v", wp)
	}
	if wp := got["amb/wp.amb.svc.cluster.local"].GetService().GetWaypoint(); wp != nil {
		t.Errorf("the waypoint's service points at %v", wp)
	}

	gw.Annotations = map[string]string{"note": "irrelevant"}
	if _, err := gws.Update(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	base = f.translated("irrelevant gateway change", base, 0)

	gw2 := waypointGW("amb", "wp", workloads.WaypointForAll, "10.96.9.10")
	gw2.ResourceVersion = ""
	if _, err := gws.Update(ctx, gw2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitContents(want(gw2))
	base = f.translated("gateway address changed", base, 4)

	if err := gws.Delete(ctx, "wp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitContents(want())
	f.translated("gateway deleted", base, 4)
}

func TestCustomResourcesNotServed(t *testing.T) {
	ns := namespace("amb", true)
	s := service("amb", "s", "10.96.0.1", nil)
	s.Labels = map[string]string{workloads.LabelUseWaypoint: "wp"}
	var logs syncBuffer
	f := startWith(t, options{noCRDs: true, log: slog.New(slog.NewTextHandler(&logs, nil))}, ns, s,
		waypointGW("amb", "wp", "", "10.96.9.9"), &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "amb", Name: "se"}})
	n, want := sv(t, s, ns)
	f.waitContents(map[string]*workloadapi.Address{n: want})
	for _, msg := range []string{"ServiceEntries are not served", "Gateways are not served"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, logs.String())
		}
	}
}

func TestServiceEntries(t *testing.T) {
	ns := namespace("amb", true)
	a := pod("amb", "a", "10.0.0.1", "n", map[string]string{"app": "a"})
	se := func(name string, mutate func(*networkingv1.ServiceEntry)) *networkingv1.ServiceEntry {
		e := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "amb", Name: name}}
		e.Spec.Hosts = []string{name + ".example.com"}
		e.Spec.Ports = []*networkingv1alpha3.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}
		mutate(e)
		return e
	}
	eps := se("eps", func(e *networkingv1.ServiceEntry) {
		e.Spec.Addresses = []string{"240.0.0.2"}
		e.Spec.Endpoints = []*networkingv1alpha3.WorkloadEntry{{Address: "192.168.0.1"}, {Address: "192.168.0.2"}}
	})
	bad := se("bad", func(e *networkingv1.ServiceEntry) { e.Spec.Addresses = []string{"240.0.0.0/24"} })
	var logs syncBuffer
	f := startWith(t, options{log: slog.New(slog.NewTextHandler(&logs, nil))}, ns, a, eps, bad)

	want := map[string]*workloadapi.Address{}
	add := func(e *networkingv1.ServiceEntry, entries ...*networkingv1.ServiceEntry) {
		addrs, _ := workloads.ServiceEntry(e, workloads.Inputs{Namespace: ns})
		for _, ad := range addrs {
			want[workloads.ResourceName(ad)] = ad
		}
		n, w := wlIn(t, a, workloads.Inputs{Namespace: ns, ServiceEntries: entries})
		want[n] = w
	}
	add(eps)
	if len(want) != 4 { // the service, two endpoints, the pod
		t.Fatalf("expected resources: %v", want)
	}
	f.waitContents(want)
	if !strings.Contains(logs.String(), "serviceentry amb/bad: spec.addresses[0]") {
		t.Errorf("the bad ServiceEntry is not explained in the log:\n%s", logs.String())
	}
	base := f.quiesce()

	sel := se("sel", func(e *networkingv1.ServiceEntry) {
		e.Spec.Addresses = []string{"240.0.0.1"}
		e.Spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: map[string]string{"app": "a"}}
	})
	if _, err := f.istio.NetworkingV1().ServiceEntries("amb").Create(t.Context(), sel, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	add(sel, sel)
	f.waitContents(want)
	if _, ok := f.contents()["Kubernetes//Pod/amb/a"].GetWorkload().GetServices()["amb/sel.example.com"]; !ok {
		t.Error("selected pod lacks the ServiceEntry host")
	}
	base = f.translated("selecting ServiceEntry created", base, 2)

	if err := f.istio.NetworkingV1().ServiceEntries("amb").Delete(t.Context(), "eps", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for n := range want {
		if strings.Contains(n, "eps") || strings.Contains(n, "192.168.0.") {
			delete(want, n)
		}
	}
	f.waitContents(want)
	f.translated("ServiceEntry deleted", base, 1)
}

func TestSetMesh(t *testing.T) {
	ns := namespace("amb", true)
	a := pod("amb", "a", "10.0.0.1", "n", map[string]string{"app": "a"})
	s := service("amb", "s", "10.96.0.1", map[string]string{"app": "a"})
	f := start(t, ns, a, s)
	n, w := wl(t, a, ns, s)
	ns1, sv1 := sv(t, s, ns)
	f.waitContents(map[string]*workloadapi.Address{n: w, ns1: sv1})
	base := f.quiesce()

	f.ctl.SetMesh(workloads.MeshConfig{})
	time.Sleep(100 * time.Millisecond)
	base = f.translated("same mesh", base, 0)

	m := workloads.MeshConfig{ClusterID: "c2", Network: "net2"}
	f.ctl.SetMesh(m)
	wc := workloads.Workload(a, workloads.Inputs{Namespace: ns, Services: []*corev1.Service{s}, Mesh: m})
	sc, _ := workloads.Service(s, workloads.Inputs{Namespace: ns, Mesh: m})
	f.waitContents(map[string]*workloadapi.Address{
		"c2//Pod/amb/a": {Type: &workloadapi.Address_Workload{Workload: wc}},
		ns1:             {Type: &workloadapi.Address_Service{Service: sc}},
	})
	f.translated("new mesh", base, 2)
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEndpointSlicesOfServicesWithoutSelector(t *testing.T) {
	ns := namespace("amb", true)
	db := service("amb", "db", "10.96.0.5", nil)
	f := start(t, ns, db)
	n, want := sv(t, db, ns)
	f.waitContents(map[string]*workloadapi.Address{n: want})
	base := f.quiesce()

	port, name := int32(5432), "http"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "amb", Name: "db-manual", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.168.7.7"}}},
	}
	if _, err := f.client.DiscoveryV1().EndpointSlices("amb").Create(t.Context(), es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	addrs, _ := workloads.EndpointSlice(es, db, workloads.Inputs{Namespace: ns})
	if len(addrs) != 1 {
		t.Fatalf("expected one workload: %v", addrs)
	}
	f.waitContents(map[string]*workloadapi.Address{n: want, workloads.ResourceName(addrs[0]): addrs[0]})
	base = f.translated("slice created", base, 1)

	if err := f.client.CoreV1().Services("amb").Delete(t.Context(), "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitContents(map[string]*workloadapi.Address{})
	f.translated("service deleted", base, 2) // the service and its slice
}

// TestCrossNamespaceWaypointFollowsNamespaceLabels checks that a Gateway
// admitting namespaces by label is re-evaluated for the objects that use it
// from another namespace when that namespace's labels change.
func TestCrossNamespaceWaypointFollowsNamespaceLabels(t *testing.T) {
	infra, app := namespace("infra", false), namespace("app", true)
	s := service("app", "s", "10.96.0.1", nil)
	s.Labels = map[string]string{workloads.LabelUseWaypoint: "shared", workloads.LabelUseWaypointNamespace: "infra"}
	local := service("app", "local", "10.96.0.2", nil)
	gw := waypointGW("infra", "shared", "", "10.96.9.9")
	from := gatewayv1.NamespacesFromSelector
	gw.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{
		From: &from, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"waypoints": "shared"}},
	}}
	f := start(t, infra, app, s, local, gw)
	nameS, refused := svIn(t, s, workloads.Inputs{Namespace: app, Gateways: getter(gw)})
	if refused.GetService().GetWaypoint() != nil {
		t.Fatalf("the unlabelled namespace should be refused: %v", refused)
	}
	nameL, l := sv(t, local, app)
	f.waitContents(map[string]*workloadapi.Address{nameS: refused, nameL: l})
	base := f.quiesce()

	app2 := app.DeepCopy()
	app2.Labels["waypoints"] = "shared"
	if _, err := f.client.CoreV1().Namespaces().Update(t.Context(), app2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, admitted := svIn(t, s, workloads.Inputs{Namespace: app2, Gateways: getter(gw)})
	if admitted.GetService().GetWaypoint() == nil {
		t.Fatalf("the labelled namespace should be admitted: %v", admitted)
	}
	f.waitContents(map[string]*workloadapi.Address{nameS: admitted, nameL: l})
	f.translated("namespace labelled", base, 1) // s only, not local
}
