package workloads

import (
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
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
		// gateways are the Gateways that exist.
		gateways []*gatewayv1.Gateway
		want     *workloadapi.Service // nil: skipped
		wantErr  bool
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
			name:    "waypoint from the service label",
			svc:     base(func(s *corev1.Service) { s.Labels = map[string]string{LabelUseWaypoint: "svc-wp"} }),
			ns:      plainNS,
			mesh:    mesh,
			want:    want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("svc-wp", "app") }),
			wantErr: true,
		},
		{
			name:    "waypoint from the namespace",
			svc:     base(),
			ns:      wpNS,
			mesh:    mesh,
			want:    want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
			wantErr: true,
		},
		{
			name:    "service label overrides the namespace",
			svc:     base(func(s *corev1.Service) { s.Labels = map[string]string{LabelUseWaypoint: "svc-wp"} }),
			ns:      wpNS,
			mesh:    mesh,
			want:    want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("svc-wp", "app") }),
			wantErr: true,
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
			ns:      plainNS,
			mesh:    mesh,
			want:    want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("shared", "infra") }),
			wantErr: true,
		},
		{
			name:     "waypoint gateway with a status IP",
			svc:      base(),
			ns:       wpNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", "", ipAddr("10.96.5.5"))},
			want:     want(func(s *workloadapi.Service) { s.Waypoint = waypointIP("net1", 10, 96, 5, 5) }),
		},
		{
			name:     "status hostname is preferred to the IP",
			svc:      base(),
			ns:       wpNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", "", ipAddr("10.96.5.5"), hostAddr("ns-wp.app.svc.cluster.local"))},
			want:     want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
		},
		{
			name: "spec address when status has none",
			svc:  base(),
			ns:   wpNS,
			mesh: mesh,
			gateways: []*gatewayv1.Gateway{func() *gatewayv1.Gateway {
				g := waypointGateway("app", "ns-wp", "")
				g.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "fd00::5"}}
				return g
			}()},
			want: want(func(s *workloadapi.Service) {
				s.Waypoint = waypointIP("net1", 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5)
			}),
		},
		{
			name: "waypoint in another namespace by IP",
			svc: base(func(s *corev1.Service) {
				s.Labels = map[string]string{LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra"}
			}),
			ns:       plainNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{allowFrom(waypointGateway("infra", "shared", WaypointForAll, ipAddr("10.96.7.7")), gatewayv1.NamespacesFromAll, nil)},
			want:     want(func(s *workloadapi.Service) { s.Waypoint = waypointIP("net1", 10, 96, 7, 7) }),
		},
		{
			name: "waypoint in another namespace refuses by default",
			svc: base(func(s *corev1.Service) {
				s.Labels = map[string]string{LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra"}
			}),
			ns:       plainNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("infra", "shared", WaypointForAll, ipAddr("10.96.7.7"))},
			want:     want(),
			wantErr:  true,
		},
		{
			name: "waypoint in another namespace allows by namespace selector",
			svc:  base(),
			ns:   namespace("app", map[string]string{LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra", "mesh": "yes"}),
			mesh: mesh,
			gateways: []*gatewayv1.Gateway{
				allowFrom(waypointGateway("infra", "shared", "", ipAddr("10.96.7.7")), gatewayv1.NamespacesFromSelector, map[string]string{"mesh": "yes"}),
			},
			want: want(func(s *workloadapi.Service) { s.Waypoint = waypointIP("net1", 10, 96, 7, 7) }),
		},
		{
			name: "namespace selector that does not match refuses",
			svc:  base(),
			ns:   namespace("app", map[string]string{LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra"}),
			mesh: mesh,
			gateways: []*gatewayv1.Gateway{
				allowFrom(waypointGateway("infra", "shared", "", ipAddr("10.96.7.7")), gatewayv1.NamespacesFromSelector, map[string]string{"mesh": "yes"}),
			},
			want:    want(),
			wantErr: true,
		},
		{
			name:     "gateway without an address fails closed",
			svc:      base(),
			ns:       wpNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", "")},
			want:     want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
			wantErr:  true,
		},
		{
			name:     "gateway with an unparsable IP fails closed",
			svc:      base(),
			ns:       wpNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", "", ipAddr("not-an-ip"))},
			want:     want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
			wantErr:  true,
		},
		{
			name: "gateway of another class fails closed",
			svc:  base(),
			ns:   wpNS,
			mesh: mesh,
			gateways: []*gatewayv1.Gateway{func() *gatewayv1.Gateway {
				g := waypointGateway("app", "ns-wp", "", ipAddr("10.96.5.5"))
				g.Spec.GatewayClassName = "istio"
				return g
			}()},
			want:    want(func(s *workloadapi.Service) { s.Waypoint = waypointAddr("ns-wp", "app") }),
			wantErr: true,
		},
		{
			name:     "workload-only waypoint is not used for services",
			svc:      base(),
			ns:       wpNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", WaypointForWorkload, ipAddr("10.96.5.5"))},
			want:     want(),
			wantErr:  true,
		},
		{
			name:     "a waypoint's own service does not use a waypoint",
			svc:      base(func(s *corev1.Service) { s.Labels = map[string]string{LabelGatewayManaged: ManagedByMeshController} }),
			ns:       wpNS,
			mesh:     mesh,
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", "", ipAddr("10.96.5.5"))},
			want:     want(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, errs := Service(tt.svc, Inputs{Namespace: tt.ns, Gateways: gateways(tt.gateways...), Mesh: tt.mesh})
			if tt.want == nil {
				if got != nil {
					t.Fatalf("Service() = %v; want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("Service() returned nil; want a service")
			}
			assertProto(t, got, tt.want)
			if (len(errs) > 0) != tt.wantErr {
				t.Errorf("Service() errors = %v, want errors: %v", errs, tt.wantErr)
			}
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
	w := Workload(readyPod(), Inputs{Namespace: ambientNS, Mesh: mesh})
	s, _ := Service(service("web", nil), Inputs{Namespace: plainNS, Mesh: mesh})
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
