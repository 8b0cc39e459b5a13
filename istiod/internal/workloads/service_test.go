package workloads

import (
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestService(t *testing.T) {
	v4 := []byte{10, 96, 0, 10}
	v6 := []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a}
	base := func(mutate ...func(*corev1.Service)) *corev1.Service {
		s := service("web", map[string]string{"app": "web"},
			svcPort(80, intstr.FromInt32(8080)),
			svcPort(443, intstr.FromString("https")),
			svcPort(90, intstr.IntOrString{}))
		for _, m := range mutate {
			m(s)
		}
		return s
	}
	want := func(mutate ...func(*workloadapi.Service)) *workloadapi.Service {
		s := &workloadapi.Service{
			Name:      "web",
			Namespace: "app",
			Hostname:  "web.app.svc.cluster.local",
			Addresses: []*workloadapi.NetworkAddress{{Network: "net1", Address: v4}},
			Ports: []*workloadapi.Port{
				{ServicePort: 80, TargetPort: 8080},
				{ServicePort: 443},
				{ServicePort: 90, TargetPort: 90},
			},
		}
		for _, m := range mutate {
			m(s)
		}
		return s
	}
	wpNS := namespace("app", map[string]string{LabelUseWaypoint: "ns-wp"})

	tests := []struct {
		name string
		svc  *corev1.Service
		ns   *corev1.Namespace
		mesh MeshConfig
		want *workloadapi.Service // nil: skipped
	}{
		{
			name: "ClusterIP",
			svc:  base(),
			ns:   plainNS,
			mesh: mesh,
			want: want(),
		},
		{
			name: "custom domain suffix",
			svc:  base(),
			ns:   plainNS,
			mesh: MeshConfig{Network: "net1", DomainSuffix: "corp.internal"},
			want: want(func(s *workloadapi.Service) { s.Hostname = "web.app.svc.corp.internal" }),
		},
		{
			name: "ClusterIP only, no ClusterIPs list",
			svc:  base(func(s *corev1.Service) { s.Spec.ClusterIPs = nil }),
			ns:   plainNS,
			mesh: mesh,
			want: want(),
		},
		{
			name: "dual-stack keeps both families in order",
			svc:  base(func(s *corev1.Service) { s.Spec.ClusterIPs = []string{"fd00::a", "10.96.0.10"} }),
			ns:   plainNS,
			mesh: mesh,
			want: want(func(s *workloadapi.Service) {
				s.Addresses = []*workloadapi.NetworkAddress{{Network: "net1", Address: v6}, {Network: "net1", Address: v4}}
			}),
		},
		{
			name: "headless has no VIP",
			svc: base(func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
			}),
			ns:   plainNS,
			mesh: mesh,
			want: want(func(s *workloadapi.Service) { s.Addresses = nil }),
		},
		{
			name: "ExternalName is skipped",
			svc: base(func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
			}),
			ns:   plainNS,
			mesh: mesh,
		},
		{
			name: "waypoint from the service label",
			svc:  base(func(s *corev1.Service) { s.Labels = map[string]string{LabelUseWaypoint: "svc-wp"} }),
			ns:   plainNS,
			mesh: mesh,
			want: want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("svc-wp", "app") }),
		},
		{
			name: "waypoint from the namespace",
			svc:  base(),
			ns:   wpNS,
			mesh: mesh,
			want: want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
		},
		{
			name: "service label overrides the namespace",
			svc:  base(func(s *corev1.Service) { s.Labels = map[string]string{LabelUseWaypoint: "svc-wp"} }),
			ns:   wpNS,
			mesh: mesh,
			want: want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("svc-wp", "app") }),
		},
		{
			name: "service opts out with none",
			svc:  base(func(s *corev1.Service) { s.Labels = map[string]string{LabelUseWaypoint: WaypointNone} }),
			ns:   wpNS,
			mesh: mesh,
			want: want(),
		},
		{
			name: "service waypoint in another namespace",
			svc: base(func(s *corev1.Service) {
				s.Labels = map[string]string{LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra"}
			}),
			ns:   plainNS,
			mesh: mesh,
			want: want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("shared", "infra") }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Service(tt.svc, tt.ns, tt.mesh)
			if tt.want == nil {
				if ok || got != nil {
					t.Fatalf("Service() = %v, %v; want nil, false", got, ok)
				}
				return
			}
			if !ok {
				t.Fatal("Service() returned false; want a service")
			}
			assertProto(t, got, tt.want)
		})
	}
}

func TestSelects(t *testing.T) {
	pod := readyPod()
	tests := []struct {
		name string
		svc  *corev1.Service
		want bool
	}{
		{"matching subset", service("s", map[string]string{"app": "web"}), true},
		{"all labels", service("s", map[string]string{"app": "web", "version": "v1"}), true},
		{"value differs", service("s", map[string]string{"app": "api"}), false},
		{"label missing", service("s", map[string]string{"tier": "front"}), false},
		{"empty selector selects nothing", service("s", map[string]string{}), false},
		{"nil selector selects nothing", service("s", nil), false},
		{"other namespace", func() *corev1.Service {
			s := service("s", map[string]string{"app": "web"})
			s.Namespace = "other"
			return s
		}(), false},
		{"ExternalName", func() *corev1.Service {
			s := service("s", map[string]string{"app": "web"})
			s.Spec.Type = corev1.ServiceTypeExternalName
			return s
		}(), false},
		{"nil service", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Selects(tt.svc, pod); got != tt.want {
				t.Errorf("Selects() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResourceName(t *testing.T) {
	w, _ := Workload(readyPod(), ambientNS, nil, mesh)
	s, _ := Service(service("web", nil), plainNS, mesh)
	tests := []struct {
		name string
		addr *workloadapi.Address
		want string
	}{
		{"workload", &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}, "c1//Pod/app/web-5d8f7c9b6-abcde"},
		{"service", &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}, "app/web.app.svc.cluster.local"},
		{"empty", &workloadapi.Address{}, ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ResourceName(tt.addr); got != tt.want {
				t.Errorf("ResourceName() = %q, want %q", got, tt.want)
			}
		})
	}
}
