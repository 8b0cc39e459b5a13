package workloads

import (
	"strings"
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// assertProto fails with a line diff of the text forms when got != want.
func assertProto(t *testing.T, got, want proto.Message) {
	t.Helper()
	if proto.Equal(got, want) {
		return
	}
	t.Errorf("proto mismatch (-want +got):\n%s", textDiff(protoText(want), protoText(got)))
}

func protoText(m proto.Message) string {
	return prototext.MarshalOptions{Multiline: true, Indent: "  "}.Format(m)
}

// textDiff is a minimal LCS line diff; enough to point at the differing
// fields without pulling a diff library into go.mod.
func textDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			sb.WriteString("  " + x[i] + "\n")
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			sb.WriteString("+ " + y[j] + "\n")
			j++
		default:
			sb.WriteString("- " + x[i] + "\n")
			i++
		}
	}
	return sb.String()
}

var (
	mesh      = MeshConfig{ClusterID: "c1", Network: "net1", TrustDomain: "td.example", DomainSuffix: "cluster.local"}
	ambientNS = namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient})
	plainNS   = namespace("app", nil)
)

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// readyPod is a running, ready pod in namespace "app" with one IPv4 address,
// controlled by the ReplicaSet of Deployment "web".
func readyPod(mutate ...func(*corev1.Pod)) *corev1.Pod {
	ctrl := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "web-5d8f7c9b6-abcde",
			Namespace: "app",
			Labels:    map[string]string{"app": "web", "version": "v1", "pod-template-hash": "5d8f7c9b6"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8f7c9b6", Controller: &ctrl,
			}},
		},
		Spec: corev1.PodSpec{
			NodeName:           "node-a",
			ServiceAccountName: "web-sa",
			Containers: []corev1.Container{{
				Name: "web",
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 8080},
					{Name: "grpc", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
					{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
				},
			}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      "10.0.0.5",
			PodIPs:     []corev1.PodIP{{IP: "10.0.0.5"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func withLabels(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		for i := 0; i+1 < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withoutLabels(keys ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		for _, k := range keys {
			delete(p.Labels, k)
		}
	}
}

func service(name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "app"},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			Selector:   selector,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Ports:      ports,
		},
	}
}

func svcPort(port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Port: port, TargetPort: target}
}

func waypointAddr(name, ns string) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{
			Namespace: ns, Hostname: name + "." + ns + ".svc.cluster.local",
		}},
		HboneMtlsPort: 15008,
	}
}

// wantWorkload is the expected translation of readyPod() in ambientNS with no
// services; cases tweak it.
func wantWorkload(mutate ...func(*workloadapi.Workload)) *workloadapi.Workload {
	w := &workloadapi.Workload{
		Uid:               "c1//Pod/app/web-5d8f7c9b6-abcde",
		Name:              "web-5d8f7c9b6-abcde",
		Namespace:         "app",
		Addresses:         [][]byte{{10, 0, 0, 5}},
		Network:           "net1",
		TunnelProtocol:    workloadapi.TunnelProtocol_HBONE,
		TrustDomain:       "td.example",
		ServiceAccount:    "web-sa",
		Node:              "node-a",
		CanonicalName:     "web",
		CanonicalRevision: "v1",
		WorkloadType:      workloadapi.WorkloadType_POD,
		WorkloadName:      "web",
		Status:            workloadapi.WorkloadStatus_HEALTHY,
		ClusterId:         "c1",
	}
	for _, m := range mutate {
		m(w)
	}
	return w
}

func waypointIP(network string, ip ...byte) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Network: network, Address: ip}},
		HboneMtlsPort: 15008,
	}
}

// waypointGateway is a Gateway of the waypoint class with the given
// istio.io/waypoint-for ("" for none) and status addresses.
func waypointGateway(ns, name, waypointFor string, addrs ...gatewayv1.GatewayStatusAddress) *gatewayv1.Gateway {
	g := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: WaypointClassName,
			Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: HBONEPort, Protocol: "HBONE"}},
		},
		Status: gatewayv1.GatewayStatus{Addresses: addrs},
	}
	if waypointFor != "" {
		g.Labels = map[string]string{LabelWaypointFor: waypointFor}
	}
	return g
}

func ipAddr(v string) gatewayv1.GatewayStatusAddress {
	t := gatewayv1.IPAddressType
	return gatewayv1.GatewayStatusAddress{Type: &t, Value: v}
}

func hostAddr(v string) gatewayv1.GatewayStatusAddress {
	t := gatewayv1.HostnameAddressType
	return gatewayv1.GatewayStatusAddress{Type: &t, Value: v}
}

// gateways is a GatewayGetter over gws.
func gateways(gws ...*gatewayv1.Gateway) GatewayGetter {
	return func(namespace, name string) *gatewayv1.Gateway {
		for _, g := range gws {
			if g.Namespace == namespace && g.Name == name {
				return g
			}
		}
		return nil
	}
}

// serviceEntry is a ServiceEntry in namespace "app" for api.example.com and
// api2.example.com with ports 443 (target 8443) and 80.
func serviceEntry(name string, mutate ...func(*networkingv1.ServiceEntry)) *networkingv1.ServiceEntry {
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name}}
	se.Spec.Hosts = []string{"api.example.com", "api2.example.com"}
	se.Spec.Ports = []*networkingv1alpha3.ServicePort{
		{Number: 443, Name: "https", Protocol: "TLS", TargetPort: 8443},
		{Number: 80, Name: "http", Protocol: "HTTP"},
	}
	se.Spec.Resolution = networkingv1alpha3.ServiceEntry_STATIC
	for _, m := range mutate {
		m(se)
	}
	return se
}

// allowFrom sets the allowedRoutes of g's HBONE listener.
func allowFrom(g *gatewayv1.Gateway, from gatewayv1.FromNamespaces, selector map[string]string) *gatewayv1.Gateway {
	ns := &gatewayv1.RouteNamespaces{From: &from}
	if selector != nil {
		ns.Selector = &metav1.LabelSelector{MatchLabels: selector}
	}
	g.Spec.Listeners[0].AllowedRoutes = &gatewayv1.AllowedRoutes{Namespaces: ns}
	return g
}
