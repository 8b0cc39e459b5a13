package workloads

import (
	"strings"
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestEndpointSlice(t *testing.T) {
	str := func(s string) *string { return &s }
	i32 := func(v int32) *int32 { return &v }
	no := false
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	db := service("db", nil,
		corev1.ServicePort{Name: "sql", Port: 5432, TargetPort: intstr.FromInt32(5432)},
		corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	slice := func(mutate ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "app", Name: "db-1", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{
				{Name: str("sql"), Port: i32(15432), Protocol: &tcp},
				{Name: str("dns"), Port: i32(53), Protocol: &udp},
			},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"192.168.9.1"}},
				{Addresses: []string{"192.168.9.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
				{Addresses: []string{"10.0.0.5"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web"}},
				{Addresses: []string{"bogus"}},
			},
		}
		for _, m := range mutate {
			m(es)
		}
		return es
	}
	workload := func(ip string, b []byte, status workloadapi.WorkloadStatus) *workloadapi.Address {
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
			Uid:         "c1/discovery.k8s.io/EndpointSlice/app/db-1/" + ip,
			Name:        "db-1",
			Namespace:   "app",
			Addresses:   [][]byte{b},
			Network:     "net1",
			TrustDomain: "td.example",
			Status:      status,
			ClusterId:   "c1",
			Services: map[string]*workloadapi.PortList{
				"app/db.app.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 5432, TargetPort: 15432}}},
			},
		}}}
	}
	tests := []struct {
		name     string
		es       *discoveryv1.EndpointSlice
		svc      *corev1.Service
		want     []*workloadapi.Address
		wantErrs []string
	}{
		{
			name: "manual endpoints become workloads; pods and bad addresses do not",
			es:   slice(),
			svc:  db,
			want: []*workloadapi.Address{
				workload("192.168.9.1", []byte{192, 168, 9, 1}, workloadapi.WorkloadStatus_HEALTHY),
				workload("192.168.9.2", []byte{192, 168, 9, 2}, workloadapi.WorkloadStatus_UNHEALTHY),
			},
			wantErrs: []string{`endpoints[3].addresses[0] "bogus"`},
		},
		{name: "no service", es: slice(), svc: nil},
		{name: "another service's slice", es: slice(), svc: service("web", nil)},
		{name: "FQDN slice", es: slice(func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeFQDN }), svc: db},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := EndpointSlice(tt.es, tt.svc, Inputs{Mesh: mesh})
			if len(got) != len(tt.want) {
				t.Fatalf("got %d addresses, want %d: %v", len(got), len(tt.want), got)
			}
			for i := range got {
				assertProto(t, got[i], tt.want[i])
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors %v, want %q", errs, tt.wantErrs)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.wantErrs[i]) {
					t.Errorf("error %q lacks %q", e, tt.wantErrs[i])
				}
			}
		})
	}
}
