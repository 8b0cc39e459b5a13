package route

import (
	"errors"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

const (
	echoSvc     = "default/echo.default.svc.cluster.local"
	reviewsSvc  = "default/reviews.default.svc.cluster.local"
	waypointSvc = "default/waypoint.default.svc.cluster.local"
)

func ipb(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

type wl struct {
	uid, ip, sa string
	hbone       bool
	status      workloadapi.WorkloadStatus
	svc         string
	target      uint32
	waypoint    *workloadapi.GatewayAddress
}

func (w wl) address() *workloadapi.Address {
	out := &workloadapi.Workload{Uid: w.uid, Name: w.uid, Namespace: "default", ServiceAccount: w.sa, Addresses: [][]byte{ipb(w.ip)},
		Status: w.status, Waypoint: w.waypoint, Services: map[string]*workloadapi.PortList{}}
	if w.hbone {
		out.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	}
	if w.svc != "" {
		out.Services[w.svc] = &workloadapi.PortList{Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: w.target}}}
	}
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: out}}
}

func svc(host, vip string, waypoint *workloadapi.GatewayAddress, sans ...string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
		Name: host, Namespace: "default", Hostname: host, Addresses: []*workloadapi.NetworkAddress{{Address: ipb(vip)}},
		Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 9080}}, SubjectAltNames: sans, Waypoint: waypoint,
	}}}
}

func store(t *testing.T, addrs map[string]proto.Message) *state.Store {
	t.Helper()
	st := state.New()
	var rs []state.Resource
	for name, m := range addrs {
		body, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, state.Resource{Name: name, Version: "1", Body: body})
	}
	if err := st.Apply(state.AddressType, rs, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

func id(sa string) spiffe.Identity {
	return spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}
}

func first(int) int  { return 0 }
func last(n int) int { return n - 1 }

func TestResolve(t *testing.T) {
	wpByHost := &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: "default", Hostname: "waypoint.default.svc.cluster.local"}}, HboneMtlsPort: 15008}
	wpByVIP := &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: ipb("10.96.0.99")}}}
	healthy, sick := workloadapi.WorkloadStatus_HEALTHY, workloadapi.WorkloadStatus_UNHEALTHY
	st := store(t, map[string]proto.Message{
		echoSvc:            svc("echo.default.svc.cluster.local", "10.96.0.20", nil, "spiffe://cluster.local/ns/default/sa/echo-canary"),
		"echo-1":           wl{uid: "echo-1", ip: "10.244.0.5", sa: "echo", hbone: true, status: healthy, svc: echoSvc, target: 8080}.address(),
		"echo-2":           wl{uid: "echo-2", ip: "10.244.0.6", sa: "echo", hbone: true, status: sick, svc: echoSvc, target: 8080}.address(),
		"echo-3":           wl{uid: "echo-3", ip: "10.244.1.7", sa: "echo", hbone: false, status: healthy, svc: echoSvc}.address(),
		reviewsSvc:         svc("reviews.default.svc.cluster.local", "10.96.0.30", wpByHost),
		"reviews-1":        wl{uid: "reviews-1", ip: "10.244.1.8", sa: "reviews", hbone: true, status: healthy, svc: reviewsSvc, target: 9080}.address(),
		waypointSvc:        svc("waypoint.default.svc.cluster.local", "10.96.0.99", nil),
		"waypoint-1":       wl{uid: "waypoint-1", ip: "10.244.0.50", sa: "waypoint", hbone: true, status: healthy, svc: waypointSvc}.address(),
		"ratings-1":        wl{uid: "ratings-1", ip: "10.244.1.9", sa: "ratings", hbone: true, status: healthy, waypoint: wpByVIP}.address(),
		"default/empty.sv": svc("empty", "10.96.0.40", nil),
	})
	client := st.WorkloadByIP(netip.MustParseAddr("10.244.0.5"))
	waypoint := st.WorkloadByIP(netip.MustParseAddr("10.244.0.50"))

	for _, tc := range []struct {
		name string
		src  string
		dst  string
		pick Picker
		want Target
		err  error
	}{
		{name: "pod IP in the mesh", dst: "10.244.0.5:8080", pick: first,
			want: Target{HBONE: true, Dial: netip.MustParseAddrPort("10.244.0.5:15008"), Authority: netip.MustParseAddrPort("10.244.0.5:8080"), Identities: []spiffe.Identity{id("echo")}}},
		{name: "pod IP outside the mesh", dst: "10.244.1.7:8080", pick: first,
			want: Target{Dial: netip.MustParseAddrPort("10.244.1.7:8080")}},
		{name: "unknown address", dst: "192.0.2.10:443", pick: first,
			want: Target{Dial: netip.MustParseAddrPort("192.0.2.10:443")}},
		{name: "service VIP to a healthy mesh endpoint, port mapped, SANs expected", dst: "10.96.0.20:80", pick: first,
			want: Target{HBONE: true, Dial: netip.MustParseAddrPort("10.244.0.5:15008"), Authority: netip.MustParseAddrPort("10.244.0.5:8080"), Identities: []spiffe.Identity{id("echo"), id("echo-canary")}}},
		{name: "service VIP to a plain endpoint, service's target port", dst: "10.96.0.20:80", pick: last,
			want: Target{Dial: netip.MustParseAddrPort("10.244.1.7:9080")}},
		{name: "service with a waypoint", dst: "10.96.0.30:80", pick: first,
			want: Target{HBONE: true, Waypoint: true, Dial: netip.MustParseAddrPort("10.244.0.50:15008"), Authority: netip.MustParseAddrPort("10.96.0.30:80"), Identities: []spiffe.Identity{id("waypoint")}}},
		{name: "the waypoint itself goes straight to the endpoint", src: "waypoint", dst: "10.96.0.30:80", pick: first,
			want: Target{HBONE: true, Dial: netip.MustParseAddrPort("10.244.1.8:15008"), Authority: netip.MustParseAddrPort("10.244.1.8:9080"), Identities: []spiffe.Identity{id("reviews")}}},
		{name: "workload with a waypoint by VIP", dst: "10.244.1.9:8080", pick: first,
			want: Target{HBONE: true, Waypoint: true, Dial: netip.MustParseAddrPort("10.244.0.50:15008"), Authority: netip.MustParseAddrPort("10.244.1.9:8080"), Identities: []spiffe.Identity{id("waypoint")}}},
		{name: "service without healthy endpoints", dst: "10.96.0.40:80", pick: first, err: ErrNoEndpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := client
			if tc.src == "waypoint" {
				src = waypoint
			}
			got, err := Resolve(st, src, netip.MustParseAddrPort(tc.dst), tc.pick)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.HBONE != tc.want.HBONE || got.Waypoint != tc.want.Waypoint || got.Dial != tc.want.Dial || got.Authority != tc.want.Authority || len(got.Identities) != len(tc.want.Identities) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			for i := range got.Identities {
				if got.Identities[i] != tc.want.Identities[i] {
					t.Fatalf("identities %v, want %v", got.Identities, tc.want.Identities)
				}
			}
		})
	}
}

// Load balancing only ever offers healthy endpoints.
func TestPickerSeesHealthyEndpointsOnly(t *testing.T) {
	healthy, sick := workloadapi.WorkloadStatus_HEALTHY, workloadapi.WorkloadStatus_UNHEALTHY
	st := store(t, map[string]proto.Message{
		echoSvc:  svc("echo.default.svc.cluster.local", "10.96.0.20", nil),
		"echo-1": wl{uid: "echo-1", ip: "10.244.0.5", sa: "echo", hbone: true, status: healthy, svc: echoSvc, target: 8080}.address(),
		"echo-2": wl{uid: "echo-2", ip: "10.244.0.6", sa: "echo", hbone: true, status: sick, svc: echoSvc, target: 8080}.address(),
		"echo-3": wl{uid: "echo-3", ip: "10.244.0.7", sa: "echo", hbone: true, status: healthy, svc: echoSvc, target: 8080}.address(),
	})
	seen := map[netip.Addr]bool{}
	for i := 0; i < 2; i++ {
		got, err := Resolve(st, nil, netip.MustParseAddrPort("10.96.0.20:80"), func(n int) int {
			if n != 2 {
				t.Fatalf("picker offered %d endpoints, want the 2 healthy ones", n)
			}
			return i
		})
		if err != nil {
			t.Fatal(err)
		}
		seen[got.Authority.Addr()] = true
	}
	if seen[netip.MustParseAddr("10.244.0.6")] || len(seen) != 2 {
		t.Fatalf("endpoints chosen: %v", seen)
	}
}
