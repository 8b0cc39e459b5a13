package workloads

import (
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// FuzzUserAddresses feeds arbitrary strings to every address field users
// write (ServiceEntry addresses and endpoints, EndpointSlice addresses,
// Gateway addresses): translation must not panic, must produce resources
// that marshal, and must name the field of anything it rejects.
func FuzzUserAddresses(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "240.0.0.1/32", "10.0.0.0/8", "fe80::1%eth0", "::ffff:10.0.0.1", "", "not-an-ip", "2001:db8::/128"} {
		f.Add(s, "api.example.com")
	}
	f.Fuzz(func(t *testing.T, addr, host string) {
		if !utf8.ValidString(addr) || !utf8.ValidString(host) {
			t.Skip("the API server only stores valid UTF-8")
		}
		se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ext", Labels: map[string]string{LabelUseWaypoint: "wp"}}}
		se.Spec.Hosts = []string{host, "*." + host}
		se.Spec.Addresses = []string{addr}
		se.Spec.Ports = []*networkingv1alpha3.ServicePort{{Number: 443, Name: addr}}
		se.Spec.Endpoints = []*networkingv1alpha3.WorkloadEntry{{Address: addr, Ports: map[string]uint32{addr: 1}}}
		se.Status.Addresses = []*networkingv1alpha3.ServiceEntryAddress{{Host: host, Value: addr}}
		gw := waypointGateway("app", "wp", WaypointForAll, ipAddr(addr), hostAddr(addr))
		gw.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: addr}}
		in := Inputs{Namespace: ambientNS, Gateways: gateways(gw), Mesh: mesh}

		addrs, errs := ServiceEntry(se, in)
		for _, e := range errs {
			if !strings.Contains(e.Error(), "serviceentry app/ext") {
				t.Errorf("error does not name the object: %v", e)
			}
		}
		svc := service("db", nil)
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "app", Name: "db-1", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr, host}}},
		}
		more, _ := EndpointSlice(es, svc, in)
		addrs = append(addrs, more...)
		s, _ := Service(svc, in)
		for _, a := range addrs {
			if _, err := (proto.MarshalOptions{Deterministic: true}).Marshal(a); err != nil {
				t.Fatalf("marshal: %v", err)
			}
			for _, b := range a.GetWorkload().GetAddresses() {
				if len(b) != 4 && len(b) != 16 {
					t.Fatalf("workload address of %d bytes", len(b))
				}
			}
		}
		if b := s.GetWaypoint().GetAddress().GetAddress(); b != nil && len(b) != 4 && len(b) != 16 {
			t.Fatalf("waypoint address of %d bytes", len(b))
		}
	})
}
