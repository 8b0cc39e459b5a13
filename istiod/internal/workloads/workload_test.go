package workloads

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestWorkload(t *testing.T) {
	ctrl := true
	owner := func(kind, name string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &ctrl}}
		}
	}
	now := metav1.Now()

	tests := []struct {
		name     string
		pod      *corev1.Pod
		ns       *corev1.Namespace
		services []*corev1.Service
		entries  []*networkingv1.ServiceEntry
		gateways []*gatewayv1.Gateway
		mesh     MeshConfig
		want     *workloadapi.Workload // nil: not a workload
	}{
		{
			name: "ambient namespace pod is HBONE with all fields",
			pod:  readyPod(),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(),
		},
		{
			name: "zero MeshConfig takes defaults",
			pod:  readyPod(),
			ns:   ambientNS,
			want: wantWorkload(func(w *workloadapi.Workload) {
				w.Uid = "Kubernetes//Pod/app/web-5d8f7c9b6-abcde"
				w.ClusterId = "Kubernetes"
				w.TrustDomain = "cluster.local"
				w.Network = ""
			}),
		},
		{
			name: "non-enrolled namespace is NONE",
			pod:  readyPod(),
			ns:   plainNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_NONE }),
		},
		{
			name: "nil namespace is NONE",
			pod:  readyPod(),
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_NONE }),
		},
		{
			name: "pod opts out of ambient namespace",
			pod:  readyPod(withLabels(LabelDataplaneMode, DataplaneModeNone)),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_NONE }),
		},
		{
			name: "pod opts in within non-enrolled namespace",
			pod:  readyPod(withLabels(LabelDataplaneMode, DataplaneModeAmbient)),
			ns:   plainNS,
			mesh: mesh,
			want: wantWorkload(),
		},
		{
			name: "no pod IP is skipped",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }),
			ns:   ambientNS,
			mesh: mesh,
		},
		{
			name: "unparsable pod IP is skipped",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "bogus", nil }),
			ns:   ambientNS,
			mesh: mesh,
		},
		{
			name: "hostNetwork is skipped",
			pod:  readyPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			ns:   ambientNS,
			mesh: mesh,
		},
		{
			name: "Succeeded is skipped",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
			ns:   ambientNS,
			mesh: mesh,
		},
		{
			name: "Failed is skipped",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
			ns:   ambientNS,
			mesh: mesh,
		},
		{
			name: "PodIP only, no PodIPs list",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.PodIPs = nil }),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(),
		},
		{
			name: "IPv6 and dual-stack address bytes",
			pod: readyPod(func(p *corev1.Pod) {
				p.Status.PodIPs = []corev1.PodIP{{IP: "fd00::5"}, {IP: "10.0.0.5"}}
			}),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) {
				w.Addresses = [][]byte{{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, {10, 0, 0, 5}}
			}),
		},
		{
			name: "IPv4-mapped IPv6 is sent as 4 bytes",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "::ffff:10.0.0.5"}} }),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(),
		},
		{
			name: "not ready is UNHEALTHY",
			pod: readyPod(func(p *corev1.Pod) {
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
			}),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.Status = workloadapi.WorkloadStatus_UNHEALTHY }),
		},
		{
			name: "no conditions is UNHEALTHY",
			pod:  readyPod(func(p *corev1.Pod) { p.Status.Conditions = nil }),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.Status = workloadapi.WorkloadStatus_UNHEALTHY }),
		},
		{
			name: "ready but deleting is UNHEALTHY",
			pod:  readyPod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.Status = workloadapi.WorkloadStatus_UNHEALTHY }),
		},
		{
			name: "default service account",
			pod:  readyPod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.ServiceAccount = "default" }),
		},
		{
			name: "canonical: istio labels beat app.kubernetes.io and app/version",
			pod: readyPod(withLabels(
				LabelCanonicalName, "cname", "app.kubernetes.io/name", "kname",
				LabelCanonicalRevision, "crev", "app.kubernetes.io/version", "kver")),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.CanonicalName, w.CanonicalRevision = "cname", "crev" }),
		},
		{
			name: "canonical: app.kubernetes.io beats app/version",
			pod:  readyPod(withLabels("app.kubernetes.io/name", "kname", "app.kubernetes.io/version", "kver")),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.CanonicalName, w.CanonicalRevision = "kname", "kver" }),
		},
		{
			name: "canonical: no labels falls back to workload name and latest",
			pod:  readyPod(withoutLabels("app", "version")),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.CanonicalName, w.CanonicalRevision = "web", "latest" }),
		},
		{
			name: "ReplicaSet without pod-template-hash keeps the ReplicaSet name",
			pod:  readyPod(withoutLabels("pod-template-hash", "app")),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.WorkloadName, w.CanonicalName = "web-5d8f7c9b6", "web-5d8f7c9b6" }),
		},
		{
			name: "StatefulSet owner",
			pod:  readyPod(owner("StatefulSet", "db"), withoutLabels("app")),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.WorkloadName, w.CanonicalName = "db", "db" }),
		},
		{
			name: "Job owner",
			pod:  readyPod(owner("Job", "migrate-29000"), withoutLabels("app")),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) {
				w.WorkloadName, w.CanonicalName = "migrate-29000", "migrate-29000"
			}),
		},
		{
			name: "non-controller owner is ignored; bare pod uses its name",
			pod: readyPod(withoutLabels("app"), func(p *corev1.Pod) {
				p.OwnerReferences = []metav1.OwnerReference{{Kind: "ConfigMap", Name: "cm"}}
			}),
			ns:   ambientNS,
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) {
				w.WorkloadName, w.CanonicalName = "web-5d8f7c9b6-abcde", "web-5d8f7c9b6-abcde"
			}),
		},
		{
			name: "services map with named, numeric and missing target ports",
			pod:  readyPod(),
			ns:   ambientNS,
			mesh: mesh,
			services: []*corev1.Service{
				service("web", map[string]string{"app": "web"},
					svcPort(80, intstr.FromString("http")),
					svcPort(81, intstr.FromInt32(8081)),
					svcPort(82, intstr.IntOrString{}),
					svcPort(83, intstr.FromString("grpc"))),
				// A named port that resolves only with the right protocol.
				service("dns", map[string]string{"app": "web"},
					corev1.ServicePort{Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP},
					svcPort(54, intstr.FromString("dns"))),
				// Pods without the named port are left out of that port only.
				service("metrics", map[string]string{"version": "v1"}, svcPort(9100, intstr.FromString("metrics"))),
				service("other", map[string]string{"app": "other"}, svcPort(80, intstr.FromInt32(80))),
				service("everything", nil, svcPort(80, intstr.FromInt32(80))),
				func() *corev1.Service {
					s := service("elsewhere", map[string]string{"app": "web"}, svcPort(80, intstr.FromInt32(80)))
					s.Namespace = "other-ns"
					return s
				}(),
			},
			want: wantWorkload(func(w *workloadapi.Workload) {
				w.Services = map[string]*workloadapi.PortList{
					"app/web.app.svc.cluster.local": {Ports: []*workloadapi.Port{
						{ServicePort: 80, TargetPort: 8080},
						{ServicePort: 81, TargetPort: 8081},
						{ServicePort: 82, TargetPort: 82},
						{ServicePort: 83, TargetPort: 9090},
					}},
					"app/dns.app.svc.cluster.local":     {Ports: []*workloadapi.Port{{ServicePort: 53, TargetPort: 5353}}},
					"app/metrics.app.svc.cluster.local": {Ports: []*workloadapi.Port{}},
				}
			}),
		},
		{
			name:     "waypoint from the namespace",
			pod:      readyPod(),
			ns:       namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", WaypointForWorkload, ipAddr("10.96.5.5"))},
			mesh:     mesh,
			want:     wantWorkload(func(w *workloadapi.Workload) { w.Waypoint = waypointIP("net1", 10, 96, 5, 5) }),
		},
		{
			name:     "waypoint for services only is not a workload waypoint",
			pod:      readyPod(),
			ns:       namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", "", ipAddr("10.96.5.5"))},
			mesh:     mesh,
			want:     wantWorkload(),
		},
		{
			name: "missing waypoint gives no workload waypoint",
			pod:  readyPod(),
			ns:   namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			mesh: mesh,
			want: wantWorkload(),
		},
		{
			name: "waypoint from the namespace in another namespace",
			pod:  readyPod(),
			ns: namespace("app", map[string]string{
				LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra",
			}),
			gateways: []*gatewayv1.Gateway{
				allowFrom(waypointGateway("infra", "shared", WaypointForAll, hostAddr("shared.infra.svc.cluster.local")), gatewayv1.NamespacesFromAll, nil),
			},
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.Waypoint = waypointAddr("shared", "infra") }),
		},
		{
			name: "pod waypoint overrides the namespace",
			pod:  readyPod(withLabels(LabelUseWaypoint, "pod-wp")),
			ns:   namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{
				waypointGateway("app", "ns-wp", WaypointForAll, ipAddr("10.96.5.5")),
				waypointGateway("app", "pod-wp", WaypointForAll, ipAddr("10.96.6.6")),
			},
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) { w.Waypoint = waypointIP("net1", 10, 96, 6, 6) }),
		},
		{
			name:     "pod opts out of the namespace waypoint with none",
			pod:      readyPod(withLabels(LabelUseWaypoint, WaypointNone)),
			ns:       namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", WaypointForAll, ipAddr("10.96.5.5"))},
			mesh:     mesh,
			want:     wantWorkload(),
		},
		{
			name: "namespace none means no waypoint",
			pod:  readyPod(),
			ns:   namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: WaypointNone}),
			mesh: mesh,
			want: wantWorkload(),
		},
		{
			name:     "waypoint pod does not point at itself",
			pod:      readyPod(withLabels(LabelGatewayName, "ns-wp")),
			ns:       namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", WaypointForAll, ipAddr("10.96.5.5"))},
			mesh:     mesh,
			want:     wantWorkload(),
		},
		{
			name:     "mesh-managed waypoint pod uses no waypoint",
			pod:      readyPod(withLabels(LabelGatewayManaged, ManagedByMeshController, LabelGatewayName, "other")),
			ns:       namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "ns-wp"}),
			gateways: []*gatewayv1.Gateway{waypointGateway("app", "ns-wp", WaypointForAll, ipAddr("10.96.5.5"))},
			mesh:     mesh,
			want:     wantWorkload(),
		},
		{
			name: "ServiceEntry selecting the pod adds its hosts",
			pod:  readyPod(),
			ns:   ambientNS,
			entries: []*networkingv1.ServiceEntry{
				serviceEntry("ext", func(se *networkingv1.ServiceEntry) {
					se.Spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: map[string]string{"app": "web"}}
				}),
				serviceEntry("other", func(se *networkingv1.ServiceEntry) {
					se.Spec.Hosts = []string{"other.example.com"}
					se.Spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: map[string]string{"app": "api"}}
				}),
				serviceEntry("no-selector", func(se *networkingv1.ServiceEntry) { se.Spec.Hosts = []string{"nosel.example.com"} }),
				serviceEntry("bad-vip", func(se *networkingv1.ServiceEntry) {
					se.Spec.Hosts = []string{"bad.example.com"}
					se.Spec.Addresses = []string{"10.0.0.0/8"}
					se.Spec.WorkloadSelector = &networkingv1alpha3.WorkloadSelector{Labels: map[string]string{"app": "web"}}
				}),
			},
			mesh: mesh,
			want: wantWorkload(func(w *workloadapi.Workload) {
				ports := []*workloadapi.Port{{ServicePort: 443, TargetPort: 8443}, {ServicePort: 80, TargetPort: 80}}
				w.Services = map[string]*workloadapi.PortList{
					"app/api.example.com":  {Ports: ports},
					"app/api2.example.com": {Ports: ports},
				}
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Workload(tt.pod, Inputs{Namespace: tt.ns, Services: tt.services, ServiceEntries: tt.entries, Gateways: gateways(tt.gateways...), Mesh: tt.mesh})
			if tt.want == nil {
				if got != nil {
					t.Fatalf("Workload() = %v; want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("Workload() returned nil; want a workload")
			}
			assertProto(t, got, tt.want)
		})
	}
}

func TestWorkloadNilPod(t *testing.T) {
	if w := Workload(nil, Inputs{Namespace: ambientNS, Mesh: mesh}); w != nil {
		t.Fatalf("Workload(nil) = %v", w)
	}
}

func TestLocality(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{
		LabelRegion: "eu-west", LabelZone: "eu-west-1a", LabelSubzone: "rack7",
	}}}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		node *corev1.Node
		want *workloadapi.Locality
	}{
		{"from the node", readyPod(), node, &workloadapi.Locality{Region: "eu-west", Zone: "eu-west-1a", Subzone: "rack7"}},
		{"unknown node", readyPod(), nil, nil},
		{"node without topology labels", readyPod(), &corev1.Node{}, nil},
		{"pod label wins", readyPod(withLabels(LabelPodLocality, "us-east.us-east-1b")), node,
			&workloadapi.Locality{Region: "us-east", Zone: "us-east-1b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := Workload(tc.pod, Inputs{Namespace: ambientNS, Node: tc.node, Mesh: mesh})
			if !proto.Equal(w.GetLocality(), tc.want) {
				t.Errorf("locality %v, want %v", w.GetLocality(), tc.want)
			}
		})
	}
}
