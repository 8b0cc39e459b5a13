package workloadapi

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ambient-mesh/mesh/pkg/internal/wiretest"
)

// The numbers below are Istio's (public workload.proto): the wire contract
// with Istio's istiod and ztunnel. Change none of them.

func TestSchemaNumbers(t *testing.T) {
	wiretest.Numbers(t, (&Address{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"workload": 1, "service": 2,
	})
	wiretest.Numbers(t, (&Service{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"name": 1, "namespace": 2, "hostname": 3, "addresses": 4, "ports": 5, "subject_alt_names": 6,
		"waypoint": 7, "load_balancing": 8, "ip_families": 9, "extensions": 10, "canonical": 11,
	})
	wiretest.Numbers(t, (&LoadBalancing{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"routing_preference": 1, "mode": 2, "health_policy": 3, "dns_connect_strategy": 4,
	})
	wiretest.Numbers(t, (&Workload{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"uid": 20, "name": 1, "namespace": 2, "addresses": 3, "hostname": 21, "network": 4,
		"tunnel_protocol": 5, "trust_domain": 6, "service_account": 7, "waypoint": 8,
		"network_gateway": 19, "node": 9, "canonical_name": 10, "canonical_revision": 11,
		"workload_type": 12, "workload_name": 13, "native_tunnel": 14, "application_tunnel": 23,
		"services": 22, "authorization_policies": 16, "status": 17, "cluster_id": 18,
		"locality": 24, "network_mode": 25, "extensions": 26, "capacity": 27,
	})
	wiretest.Numbers(t, (&Locality{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"region": 1, "zone": 2, "subzone": 3,
	})
	wiretest.Numbers(t, (&PortList{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"ports": 1})
	wiretest.Numbers(t, (&Port{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"service_port": 1, "target_port": 2,
	})
	wiretest.Numbers(t, (&ApplicationTunnel{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"protocol": 1, "port": 2,
	})
	wiretest.Numbers(t, (&GatewayAddress{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"hostname": 1, "address": 2, "hbone_mtls_port": 3,
	})
	wiretest.Numbers(t, (&NetworkAddress{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"network": 1, "address": 2,
	})
	wiretest.Numbers(t, (&NamespacedHostname{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"namespace": 1, "hostname": 2,
	})
	wiretest.Numbers(t, (&Extension{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"name": 1, "config": 2,
	})
}

func TestEnumNumbers(t *testing.T) {
	for _, c := range []struct {
		got, want int32
		name      string
	}{
		{int32(TunnelProtocol_NONE), 0, "NONE"},
		{int32(TunnelProtocol_HBONE), 1, "HBONE"},
		{int32(WorkloadStatus_UNHEALTHY), 1, "UNHEALTHY"},
		{int32(WorkloadType_POD), 2, "POD"},
		{int32(WorkloadType_JOB), 3, "JOB"},
		{int32(NetworkMode_HOST_NETWORK), 1, "HOST_NETWORK"},
		{int32(IPFamilies_DUAL), 3, "DUAL"},
		{int32(LoadBalancing_NETWORK), 6, "LoadBalancing.NETWORK"},
		{int32(LoadBalancing_PASSTHROUGH), 3, "LoadBalancing.PASSTHROUGH"},
		{int32(LoadBalancing_ALLOW_ALL), 1, "LoadBalancing.ALLOW_ALL"},
		{int32(LoadBalancing_FIRST_HEALTHY_RACE), 1, "LoadBalancing.FIRST_HEALTHY_RACE"},
		{int32(ApplicationTunnel_PROXY), 1, "ApplicationTunnel.PROXY"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestWorkloadOnTheWire(t *testing.T) {
	ip := netip.MustParseAddr("10.0.0.7").AsSlice()
	addr := &Address{Type: &Address_Workload{Workload: &Workload{
		Uid:                   "c1//Pod/ns/p",
		Name:                  "p",
		Namespace:             "ns",
		Addresses:             [][]byte{ip},
		Hostname:              "h",
		Network:               "net",
		TunnelProtocol:        TunnelProtocol_HBONE,
		TrustDomain:           "td",
		ServiceAccount:        "sa",
		Waypoint:              &GatewayAddress{HboneMtlsPort: 15008},
		NetworkGateway:        &GatewayAddress{HboneMtlsPort: 15009},
		Node:                  "node",
		CanonicalName:         "cn",
		CanonicalRevision:     "cr",
		WorkloadType:          WorkloadType_POD,
		WorkloadName:          "wn",
		NativeTunnel:          true,
		ApplicationTunnel:     &ApplicationTunnel{Protocol: ApplicationTunnel_PROXY},
		Services:              map[string]*PortList{"ns/svc.ns.svc.cluster.local": {Ports: []*Port{{ServicePort: 80, TargetPort: 8080}}}},
		AuthorizationPolicies: []string{"ns/pol"},
		Status:                WorkloadStatus_UNHEALTHY,
		ClusterId:             "c1",
		Locality:              &Locality{Region: "r", Zone: "z", Subzone: "s"},
		NetworkMode:           NetworkMode_HOST_NETWORK,
		Extensions:            []*Extension{{Name: "ext"}},
		Capacity:              wrapperspb.UInt32(3),
	}}}
	w := wiretest.Bytes(t, wiretest.Marshal(t, addr), 1)

	for num, want := range map[protowire.Number]string{
		20: "c1//Pod/ns/p", 1: "p", 2: "ns", 3: string(ip), 21: "h", 4: "net", 6: "td", 7: "sa",
		9: "node", 10: "cn", 11: "cr", 13: "wn", 16: "ns/pol", 18: "c1",
	} {
		if got := string(wiretest.Bytes(t, w, num)); got != want {
			t.Errorf("field %d = %q, want %q", num, got, want)
		}
	}
	for num, want := range map[protowire.Number]uint64{5: 1, 12: 2, 14: 1, 17: 1, 25: 1} {
		if got := wiretest.Varint(t, w, num); got != want {
			t.Errorf("field %d = %d, want %d", num, got, want)
		}
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, w, 8), 3); got != 15008 {
		t.Errorf("waypoint(8).hbone_mtls_port(3) = %d", got)
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, w, 19), 3); got != 15009 {
		t.Errorf("network_gateway(19).hbone_mtls_port(3) = %d", got)
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, w, 23), 1); got != 1 {
		t.Errorf("application_tunnel(23).protocol(1) = %d", got)
	}
	// A map entry is a message {key = 1; value = 2}.
	entry := wiretest.Bytes(t, w, 22)
	if got := string(wiretest.Bytes(t, entry, 1)); got != "ns/svc.ns.svc.cluster.local" {
		t.Errorf("services(22) key = %q", got)
	}
	port := wiretest.Bytes(t, wiretest.Bytes(t, entry, 2), 1)
	if sp, tp := wiretest.Varint(t, port, 1), wiretest.Varint(t, port, 2); sp != 80 || tp != 8080 {
		t.Errorf("services(22) port = %d->%d, want 80->8080", sp, tp)
	}
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, w, 24), 2)); got != "z" {
		t.Errorf("locality(24).zone(2) = %q", got)
	}
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, w, 26), 1)); got != "ext" {
		t.Errorf("extensions(26).name(1) = %q", got)
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, w, 27), 1); got != 3 {
		t.Errorf("capacity(27).value(1) = %d", got)
	}
}

func TestServiceOnTheWire(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10").AsSlice()
	wp := netip.MustParseAddr("10.0.0.9").AsSlice()
	addr := &Address{Type: &Address_Service{Service: &Service{
		Name:            "svc",
		Namespace:       "ns",
		Hostname:        "svc.ns.svc.cluster.local",
		Addresses:       []*NetworkAddress{{Network: "net", Address: vip}},
		Ports:           []*Port{{ServicePort: 80, TargetPort: 8080}},
		SubjectAltNames: []string{"spiffe://td/ns/ns/sa/x"},
		Waypoint: &GatewayAddress{
			Destination:   &GatewayAddress_Address{Address: &NetworkAddress{Network: "net", Address: wp}},
			HboneMtlsPort: 15008,
		},
		LoadBalancing: &LoadBalancing{Mode: LoadBalancing_FAILOVER, DnsConnectStrategy: LoadBalancing_FIRST_HEALTHY_RACE},
		IpFamilies:    IPFamilies_IPV4_ONLY,
		Canonical:     true,
	}}}
	s := wiretest.Bytes(t, wiretest.Marshal(t, addr), 2)

	for num, want := range map[protowire.Number]string{1: "svc", 2: "ns", 3: "svc.ns.svc.cluster.local", 6: "spiffe://td/ns/ns/sa/x"} {
		if got := string(wiretest.Bytes(t, s, num)); got != want {
			t.Errorf("field %d = %q, want %q", num, got, want)
		}
	}
	na := wiretest.Bytes(t, s, 4)
	if got := string(wiretest.Bytes(t, na, 1)); got != "net" {
		t.Errorf("addresses(4).network(1) = %q", got)
	}
	if got := wiretest.Bytes(t, na, 2); string(got) != string(vip) {
		t.Errorf("addresses(4).address(2) = %v", got)
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, s, 5), 2); got != 8080 {
		t.Errorf("ports(5).target_port(2) = %d", got)
	}
	waypoint := wiretest.Bytes(t, s, 7)
	if got := wiretest.Bytes(t, wiretest.Bytes(t, waypoint, 2), 2); string(got) != string(wp) {
		t.Errorf("waypoint(7).address(2).address(2) = %v", got)
	}
	if got := wiretest.Varint(t, waypoint, 3); got != 15008 {
		t.Errorf("waypoint(7).hbone_mtls_port(3) = %d", got)
	}
	lb := wiretest.Bytes(t, s, 8)
	if m, d := wiretest.Varint(t, lb, 2), wiretest.Varint(t, lb, 4); m != 2 || d != 1 {
		t.Errorf("load_balancing(8): mode(2) = %d, dns_connect_strategy(4) = %d", m, d)
	}
	if got := wiretest.Varint(t, s, 9); got != 1 {
		t.Errorf("ip_families(9) = %d", got)
	}
	if got := wiretest.Varint(t, s, 11); got != 1 {
		t.Errorf("canonical(11) = %d", got)
	}

	// The other destination of a GatewayAddress: a service by name.
	g := wiretest.Marshal(t, &GatewayAddress{Destination: &GatewayAddress_Hostname{
		Hostname: &NamespacedHostname{Namespace: "ns", Hostname: "waypoint.ns.svc.cluster.local"},
	}})
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, g, 1), 2)); got != "waypoint.ns.svc.cluster.local" {
		t.Errorf("hostname(1).hostname(2) = %q", got)
	}
}
