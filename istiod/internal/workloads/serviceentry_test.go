package workloads

import (
	"strings"
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestServiceEntry(t *testing.T) {
	ports := []*workloadapi.Port{{ServicePort: 443, TargetPort: 8443}, {ServicePort: 80, TargetPort: 80}}
	svc := func(host string, mutate ...func(*workloadapi.Service)) *workloadapi.Address {
		s := &workloadapi.Service{Name: "ext", Namespace: "app", Hostname: host, Ports: ports}
		for _, m := range mutate {
			m(s)
		}
		return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
	}
	vips := func(ips ...[]byte) func(*workloadapi.Service) {
		return func(s *workloadapi.Service) {
			for _, ip := range ips {
				s.Addresses = append(s.Addresses, &workloadapi.NetworkAddress{Network: "net1", Address: ip})
			}
		}
	}
	endpoint := func(addr string, ip []byte, mutate ...func(*workloadapi.Workload)) *workloadapi.Address {
		w := &workloadapi.Workload{
			Uid:               "c1/networking.istio.io/ServiceEntry/app/ext/" + addr,
			Name:              "ext",
			Namespace:         "app",
			Addresses:         [][]byte{ip},
			Network:           "net1",
			TrustDomain:       "td.example",
			CanonicalName:     "ext",
			CanonicalRevision: "latest",
			WorkloadType:      workloadapi.WorkloadType_POD,
			WorkloadName:      "ext",
			Status:            workloadapi.WorkloadStatus_HEALTHY,
			ClusterId:         "c1",
			Services: map[string]*workloadapi.PortList{
				"app/api.example.com":  {Ports: ports},
				"app/api2.example.com": {Ports: ports},
			},
		}
		for _, m := range mutate {
			m(w)
		}
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
	}

	tests := []struct {
		name     string
		se       *networkingv1.ServiceEntry
		ns       *corev1.Namespace
		gateways []*gatewayv1.Gateway
		want     []*workloadapi.Address
		// wantErrs are substrings, one per expected error.
		wantErrs []string
	}{
		{
			name: "one service per host with VIPs, ports and SANs",
			se: serviceEntry("ext", func(se *networkingv1.ServiceEntry) {
				se.Spec.Addresses = []string{"240.0.0.1", "240.0.0.2/32"}
				se.Spec.SubjectAltNames = []string{"spiffe://td.example/ns/app/sa/ext"}
			}),
			ns: plainNS,
			want: []*workloadapi.Address{
				svc("api.example.com", vips([]byte{240, 0, 0, 1}, []byte{240, 0, 0, 2}), func(s *workloadapi.Service) {
					s.SubjectAltNames = []string{"spiffe://td.example/ns/app/sa/ext"}
				}),
				svc("api2.example.com", vips([]byte{240, 0, 0, 1}, []byte{240, 0, 0, 2}), func(s *workloadapi.Service) {
					s.SubjectAltNames = []string{"spiffe://td.example/ns/app/sa/ext"}
				}),
			},
		},
		{
			name:     "a CIDR address is rejected with the field named",
			se:       serviceEntry("ext", func(se *networkingv1.ServiceEntry) { se.Spec.Addresses = []string{"240.0.0.1", "10.0.0.0/8"} }),
			ns:       plainNS,
			wantErrs: []string{"serviceentry app/ext: spec.addresses[1]"},
		},
		{
			name: "auto-allocated addresses from status, per host",
			se: serviceEntry("ext", func(se *networkingv1.ServiceEntry) {
				se.Status.Addresses = []*networkingv1alpha3.ServiceEntryAddress{
					{Host: "api.example.com", Value: "240.240.0.1"},
					{Host: "api2.example.com", Value: "2001:2::1"},
				}
			}),
			ns: plainNS,
			want: []*workloadapi.Address{
				svc("api.example.com", vips([]byte{240, 240, 0, 1})),
				svc("api2.example.com", vips([]byte{0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})),
			},
		},
		{
			name: "inline endpoints become workloads; bad ones are skipped",
			se: serviceEntry("ext", func(se *networkingv1.ServiceEntry) {
				se.Spec.Hosts = []string{"api.example.com", "api2.example.com", "api.example.com"}
				se.Spec.Endpoints = []*networkingv1alpha3.WorkloadEntry{
					{Address: "192.168.1.1", ServiceAccount: "vm", Ports: map[string]uint32{"http": 8080}},
					{Address: "vm.example.com"},
					{Address: "192.168.1.2", Network: "vpc"},
					{Address: "192.168.1.1"},
				}
			}),
			ns: plainNS,
			want: []*workloadapi.Address{
				svc("api.example.com"),
				svc("api2.example.com"),
				endpoint("192.168.1.1", []byte{192, 168, 1, 1}, func(w *workloadapi.Workload) {
					w.ServiceAccount = "vm"
					p := []*workloadapi.Port{{ServicePort: 443, TargetPort: 8443}, {ServicePort: 80, TargetPort: 8080}}
					w.Services = map[string]*workloadapi.PortList{"app/api.example.com": {Ports: p}, "app/api2.example.com": {Ports: p}}
				}),
				endpoint("192.168.1.2", []byte{192, 168, 1, 2}, func(w *workloadapi.Workload) { w.Network = "vpc" }),
			},
			wantErrs: []string{"spec.endpoints[1].address \"vm.example.com\"", "spec.endpoints[3].address \"192.168.1.1\": duplicate"},
		},
		{
			name: "waypoint: services by label, endpoints by namespace",
			se: serviceEntry("ext", func(se *networkingv1.ServiceEntry) {
				se.Labels = map[string]string{LabelUseWaypoint: "se-wp", LabelTunnel: TunnelHTTP}
				se.Spec.Hosts = []string{"api.example.com"}
				se.Spec.Endpoints = []*networkingv1alpha3.WorkloadEntry{{Address: "192.168.1.1"}}
			}),
			ns: namespace("app", map[string]string{LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{
				waypointGateway("app", "se-wp", "", ipAddr("10.96.5.5")),
				waypointGateway("app", "ns-wp", WaypointForWorkload, ipAddr("10.96.6.6")),
			},
			want: []*workloadapi.Address{
				svc("api.example.com", func(s *workloadapi.Service) { s.Waypoint = waypointIP("net1", 10, 96, 5, 5) }),
				endpoint("192.168.1.1", []byte{192, 168, 1, 1}, func(w *workloadapi.Workload) {
					w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
					w.Waypoint = waypointIP("net1", 10, 96, 6, 6)
					w.Services = map[string]*workloadapi.PortList{"app/api.example.com": {Ports: ports}}
				}),
			},
		},
		{
			name: "missing waypoint fails closed for the services",
			se:   serviceEntry("ext", func(se *networkingv1.ServiceEntry) { se.Spec.Hosts = []string{"api.example.com"} }),
			ns:   namespace("app", map[string]string{LabelUseWaypoint: "ns-wp"}),
			want: []*workloadapi.Address{
				svc("api.example.com", func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
			},
			wantErrs: []string{"waypoint app/ns-wp: gateway not found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := ServiceEntry(tt.se, Inputs{Namespace: tt.ns, Gateways: gateways(tt.gateways...), Mesh: mesh})
			if len(got) != len(tt.want) {
				t.Fatalf("got %d addresses, want %d: %v", len(got), len(tt.want), got)
			}
			for i := range got {
				assertProto(t, got[i], tt.want[i])
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors %v, want %d matching %q", errs, len(tt.wantErrs), tt.wantErrs)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.wantErrs[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e, tt.wantErrs[i])
				}
			}
		})
	}
}
