package security

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/ambient-mesh/mesh/pkg/internal/wiretest"
)

// The numbers below are Istio's (public authorization.proto): the wire
// contract with Istio's istiod and ztunnel. Change none of them.

func TestSchemaNumbers(t *testing.T) {
	wiretest.Numbers(t, (&Authorization{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"name": 1, "namespace": 2, "scope": 3, "action": 4, "groups": 5, "dry_run": 6,
	})
	wiretest.Numbers(t, (&Group{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"rules": 1})
	wiretest.Numbers(t, (&Rules{}).ProtoReflect().Descriptor(), map[string]protowire.Number{"matches": 2})
	wiretest.Numbers(t, (&Match{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"namespaces": 1, "not_namespaces": 2, "service_accounts": 11, "not_service_accounts": 12,
		"principals": 3, "not_principals": 4, "source_ips": 5, "not_source_ips": 6,
		"destination_ips": 7, "not_destination_ips": 8, "destination_ports": 9, "not_destination_ports": 10,
	})
	wiretest.Numbers(t, (&Address{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"address": 1, "length": 2,
	})
	wiretest.Numbers(t, (&ServiceAccountMatch{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"namespace": 1, "serviceAccount": 2,
	})
	wiretest.Numbers(t, (&StringMatch{}).ProtoReflect().Descriptor(), map[string]protowire.Number{
		"exact": 1, "prefix": 2, "suffix": 3, "presence": 4,
	})
	if Scope_GLOBAL != 0 || Scope_NAMESPACE != 1 || Scope_WORKLOAD_SELECTOR != 2 {
		t.Error("Scope values moved")
	}
	if Action_ALLOW != 0 || Action_DENY != 1 {
		t.Error("Action values moved")
	}
}

func TestAuthorizationOnTheWire(t *testing.T) {
	a := &Authorization{
		Name:      "deny-db",
		Namespace: "ns",
		Scope:     Scope_WORKLOAD_SELECTOR,
		Action:    Action_DENY,
		Groups: []*Group{{Rules: []*Rules{{Matches: []*Match{{
			NotNamespaces:    []*StringMatch{{MatchType: &StringMatch_Prefix{Prefix: "kube-"}}},
			ServiceAccounts:  []*ServiceAccountMatch{{Namespace: "ns", ServiceAccount: "web"}},
			Principals:       []*StringMatch{{MatchType: &StringMatch_Presence{Presence: &emptypb.Empty{}}}},
			SourceIps:        []*Address{{Address: []byte{10, 0, 0, 0}, Length: 8}},
			DestinationPorts: []uint32{5432},
		}}}}}},
	}
	b := wiretest.Marshal(t, a)
	if got := string(wiretest.Bytes(t, b, 1)); got != "deny-db" {
		t.Errorf("name(1) = %q", got)
	}
	if s, act := wiretest.Varint(t, b, 3), wiretest.Varint(t, b, 4); s != 2 || act != 1 {
		t.Errorf("scope(3) = %d, action(4) = %d", s, act)
	}
	m := wiretest.Bytes(t, wiretest.Bytes(t, wiretest.Bytes(t, b, 5), 1), 2) // groups.rules.matches
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, m, 2), 2)); got != "kube-" {
		t.Errorf("not_namespaces(2).prefix(2) = %q", got)
	}
	if got := string(wiretest.Bytes(t, wiretest.Bytes(t, m, 11), 2)); got != "web" {
		t.Errorf("service_accounts(11).serviceAccount(2) = %q", got)
	}
	if got := wiretest.Bytes(t, wiretest.Bytes(t, m, 3), 4); len(got) != 0 {
		t.Errorf("principals(3).presence(4) = %v, want empty message", got)
	}
	if got := wiretest.Varint(t, wiretest.Bytes(t, m, 5), 2); got != 8 {
		t.Errorf("source_ips(5).length(2) = %d", got)
	}
	// proto3 packs repeated scalars: one length-delimited field of varints.
	packed := wiretest.Bytes(t, m, 9)
	if v, n := protowire.ConsumeVarint(packed); n != len(packed) || v != 5432 {
		t.Errorf("destination_ports(9) = %v, want packed [5432]", packed)
	}
}
