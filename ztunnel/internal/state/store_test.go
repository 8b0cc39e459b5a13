package state

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

func pack(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ip(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func workload(uid, addr string, status workloadapi.WorkloadStatus, services ...string) *workloadapi.Address {
	w := &workloadapi.Workload{Uid: uid, Name: uid, Namespace: "default", Addresses: [][]byte{ip(addr)}, Status: status,
		TunnelProtocol: workloadapi.TunnelProtocol_HBONE, Services: map[string]*workloadapi.PortList{}}
	for _, s := range services {
		w.Services[s] = &workloadapi.PortList{Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}
	}
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
}

func service(host, vip string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
		Name: strings.Split(host, ".")[0], Namespace: "default", Hostname: host,
		Addresses: []*workloadapi.NetworkAddress{{Address: ip(vip)}},
		Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}},
	}}}
}

func TestAddressesMergeAsDeltas(t *testing.T) {
	s := New()
	if err := s.Apply(AddressType, []Resource{
		{Name: "c//Pod/default/echo-1", Version: "1", Body: pack(t, workload("c//Pod/default/echo-1", "10.244.0.5", workloadapi.WorkloadStatus_HEALTHY, "default/echo.default.svc.cluster.local"))},
		{Name: "c//Pod/default/echo-2", Version: "1", Body: pack(t, workload("c//Pod/default/echo-2", "10.244.1.5", workloadapi.WorkloadStatus_UNHEALTHY, "default/echo.default.svc.cluster.local"))},
		{Name: "default/echo.default.svc.cluster.local", Version: "1", Body: pack(t, service("echo.default.svc.cluster.local", "10.96.0.20"))},
	}, nil); err != nil {
		t.Fatal(err)
	}
	if w := s.WorkloadByIP(netip.MustParseAddr("10.244.0.5")); w == nil || w.GetUid() != "c//Pod/default/echo-1" {
		t.Fatalf("by IP: %v", w)
	}
	if svc := s.ServiceByVIP(netip.MustParseAddr("10.96.0.20")); svc == nil || svc.GetHostname() != "echo.default.svc.cluster.local" {
		t.Fatalf("by VIP: %v", svc)
	}
	if svc := s.ServiceByKey("default/echo.default.svc.cluster.local"); svc == nil || svc.GetName() != "echo" {
		t.Fatalf("by the key workloads name it by: %v", svc)
	}
	// Only the healthy endpoint is offered.
	if eps := s.Endpoints("default/echo.default.svc.cluster.local"); len(eps) != 1 || eps[0].GetUid() != "c//Pod/default/echo-1" {
		t.Fatalf("endpoints: %v", eps)
	}

	// A pod that moved address: the old address no longer finds it.
	if err := s.Apply(AddressType, []Resource{{Name: "c//Pod/default/echo-1", Version: "2", Body: pack(t, workload("c//Pod/default/echo-1", "10.244.0.9", workloadapi.WorkloadStatus_HEALTHY))}}, nil); err != nil {
		t.Fatal(err)
	}
	if w := s.WorkloadByIP(netip.MustParseAddr("10.244.0.5")); w != nil {
		t.Fatalf("stale address still resolves to %v", w.GetUid())
	}
	if w := s.WorkloadByIP(netip.MustParseAddr("10.244.0.9")); w == nil {
		t.Fatal("new address does not resolve")
	}
	// Removal drops the resource and its indexes, and nothing else.
	if err := s.Apply(AddressType, nil, []string{"default/echo.default.svc.cluster.local"}); err != nil {
		t.Fatal(err)
	}
	if s.ServiceByVIP(netip.MustParseAddr("10.96.0.20")) != nil || s.ServiceByKey("default/echo.default.svc.cluster.local") != nil {
		t.Fatal("removed service still resolves")
	}
	if s.WorkloadByIP(netip.MustParseAddr("10.244.1.5")) == nil {
		t.Fatal("removal of a service dropped a workload")
	}
	v := s.Versions(AddressType)
	if v["c//Pod/default/echo-1"] != "2" || len(v) != 2 {
		t.Fatalf("versions %v", v)
	}
}

// A bad resource is rejected with its name and field, the good ones of the
// same delta are applied, and the bad one's last good version stays.
func TestInvalidResourceIsRejectedAlone(t *testing.T) {
	s := New()
	good := workload("c//Pod/default/a", "10.244.0.5", workloadapi.WorkloadStatus_HEALTHY)
	if err := s.Apply(AddressType, []Resource{{Name: "c//Pod/default/a", Version: "1", Body: pack(t, good)}}, nil); err != nil {
		t.Fatal(err)
	}
	bad := workload("c//Pod/default/a", "10.244.0.6", workloadapi.WorkloadStatus_HEALTHY)
	bad.GetWorkload().Addresses = [][]byte{{10, 0, 0}}
	err := s.Apply(AddressType, []Resource{
		{Name: "c//Pod/default/a", Version: "2", Body: pack(t, bad)},
		{Name: "c//Pod/default/b", Version: "1", Body: pack(t, workload("c//Pod/default/b", "10.244.0.7", workloadapi.WorkloadStatus_HEALTHY))},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "c//Pod/default/a") || !strings.Contains(err.Error(), "addresses[0]") {
		t.Fatalf("error %v; want one naming the resource and the field", err)
	}
	if s.WorkloadByIP(netip.MustParseAddr("10.244.0.7")) == nil {
		t.Error("a valid resource in the same delta was dropped")
	}
	if w := s.WorkloadByIP(netip.MustParseAddr("10.244.0.5")); w == nil {
		t.Error("the last good version of the rejected resource was lost")
	}
	if v := s.Versions(AddressType)["c//Pod/default/a"]; v != "1" {
		t.Errorf("rejected resource recorded at version %q, want 1", v)
	}
	if err := s.Apply(AddressType, []Resource{{Name: "x", Body: pack(t, &workloadapi.Address{})}}, nil); err == nil {
		t.Error("an empty Address was accepted")
	}
}

func TestPoliciesApplyByScope(t *testing.T) {
	s := New()
	mk := func(name, ns string, scope security.Scope) Resource {
		return Resource{Name: ns + "/" + name, Version: "1", Body: pack(t, &security.Authorization{Name: name, Namespace: ns, Scope: scope, Action: security.Action_ALLOW})}
	}
	if err := s.Apply(AuthorizationType, []Resource{
		mk("global", "istio-system", security.Scope_GLOBAL),
		mk("ns", "default", security.Scope_NAMESPACE),
		mk("other-ns", "other", security.Scope_NAMESPACE),
		mk("selected", "default", security.Scope_WORKLOAD_SELECTOR),
		mk("unselected", "default", security.Scope_WORKLOAD_SELECTOR),
	}, nil); err != nil {
		t.Fatal(err)
	}
	w := workload("c//Pod/default/a", "10.244.0.5", workloadapi.WorkloadStatus_HEALTHY).GetWorkload()
	w.AuthorizationPolicies = []string{"default/selected"}
	var keys []string
	for _, p := range s.PoliciesFor(w.GetNamespace(), w.GetAuthorizationPolicies()) {
		keys = append(keys, p.Key())
	}
	if got := strings.Join(keys, ","); got != "default/ns,default/selected,istio-system/global" {
		t.Fatalf("policies %s", got)
	}
	bad := Resource{Name: "default/bad", Version: "1", Body: pack(t, &security.Authorization{Name: "bad", Namespace: "default", Action: 5})}
	if err := s.Apply(AuthorizationType, []Resource{bad}, nil); err == nil || !strings.Contains(err.Error(), "action") {
		t.Fatalf("bad policy: %v", err)
	}
}

// Endpoints follow every change of the workloads behind a service: a new
// healthy member, one turning unhealthy or healthy, one leaving the service
// or moving to another, one removed; always sorted by UID.
func TestEndpointsFollowWorkloadChanges(t *testing.T) {
	s := New()
	const a, b = "default/a.default.svc.cluster.local", "default/b.default.svc.cluster.local"
	apply := func(uid string, status workloadapi.WorkloadStatus, services ...string) {
		t.Helper()
		if err := s.Apply(AddressType, []Resource{{Name: uid, Version: "1", Body: pack(t, workload(uid, "10.244.0."+uid[len(uid)-1:], status, services...))}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	uids := func(key string) string {
		var out []string
		for _, w := range s.Endpoints(key) {
			out = append(out, w.GetUid())
		}
		return strings.Join(out, ",")
	}
	expect := func(what, key, want string) {
		t.Helper()
		if got := uids(key); got != want {
			t.Fatalf("%s: endpoints of %s are [%s], want [%s]", what, key, got, want)
		}
	}
	apply("w3", workloadapi.WorkloadStatus_HEALTHY, a)
	apply("w1", workloadapi.WorkloadStatus_HEALTHY, a, b)
	apply("w2", workloadapi.WorkloadStatus_UNHEALTHY, a)
	expect("added", a, "w1,w3")
	expect("added", b, "w1")
	held := s.Endpoints(a)
	apply("w2", workloadapi.WorkloadStatus_HEALTHY, a)
	expect("turned healthy", a, "w1,w2,w3")
	if len(held) != 2 {
		t.Fatalf("a slice handed out earlier changed under its reader: %d entries", len(held))
	}
	apply("w1", workloadapi.WorkloadStatus_UNHEALTHY, a, b)
	expect("turned unhealthy", a, "w2,w3")
	expect("turned unhealthy", b, "")
	apply("w3", workloadapi.WorkloadStatus_HEALTHY, b)
	expect("moved to b", a, "w2")
	expect("moved to b", b, "w3")
	if err := s.Apply(AddressType, nil, []string{"w2", "w3"}); err != nil {
		t.Fatal(err)
	}
	expect("removed", a, "")
	expect("removed", b, "")
	if len(s.members) != 2 || len(s.endpoints) != 0 {
		t.Fatalf("index keeps %d services' members (want w1's two), %d endpoint lists", len(s.members), len(s.endpoints))
	}
}

// BenchmarkApplyServiceEndpoints: one push of every endpoint of one large
// service (first sync, or istiod reconnecting). Its cost per endpoint
// should not grow with the service's size.
func BenchmarkApplyServiceEndpoints(b *testing.B) {
	for _, n := range []int{1000, 8000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var rs []Resource
			for i := range n {
				uid := fmt.Sprintf("c//Pod/default/big-%d", i)
				addr := netip.AddrFrom4([4]byte{10, 245, byte(i >> 8), byte(i)}).String()
				a, err := anypb.New(workload(uid, addr, workloadapi.WorkloadStatus_HEALTHY, "default/big.default.svc.cluster.local"))
				if err != nil {
					b.Fatal(err)
				}
				rs = append(rs, Resource{Name: uid, Version: "1", Body: a})
			}
			for b.Loop() {
				s := New()
				if err := s.Apply(AddressType, rs, nil); err != nil {
					b.Fatal(err)
				}
				if len(s.Endpoints("default/big.default.svc.cluster.local")) != n {
					b.Fatal("endpoints missing")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/endpoint")
		})
	}
}
