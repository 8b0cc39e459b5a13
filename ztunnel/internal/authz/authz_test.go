package authz

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

var (
	sleep = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "foo", ServiceAccount: "sleep"}
	other = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "bar", ServiceAccount: "curl"}
)

func conn(src spiffe.Identity, srcIP, dst string) Conn {
	return Conn{Source: src, Src: netip.AddrPortFrom(netip.MustParseAddr(srcIP), 40000), Dst: netip.MustParseAddrPort(dst)}
}

func exactM(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}
func prefixM(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: s}}
}
func suffixM(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: s}}
}
func presenceM() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}
func cidr(s string) *security.Address {
	p := netip.MustParsePrefix(s)
	return &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

// policy builds an Authorization with one group of one rule per match set.
func policy(name string, action security.Action, groups ...[]*security.Rules) *security.Authorization {
	a := &security.Authorization{Name: name, Namespace: "foo", Scope: security.Scope_NAMESPACE, Action: action}
	for _, g := range groups {
		a.Groups = append(a.Groups, &security.Group{Rules: g})
	}
	return a
}

func rule(ms ...*security.Match) *security.Rules { return &security.Rules{Matches: ms} }

func compile(t *testing.T, as ...*security.Authorization) []*Policy {
	t.Helper()
	var ps []*Policy
	for _, a := range as {
		p, err := Compile(a)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestMatchFields(t *testing.T) {
	tls := conn(sleep, "10.0.0.1", "10.0.1.5:8080")
	plain := conn(spiffe.Identity{}, "10.0.0.1", "10.0.1.5:8080")
	for _, tc := range []struct {
		name string
		m    *security.Match
		c    Conn
		want bool
	}{
		{"principal exact", &security.Match{Principals: []*security.StringMatch{exactM("cluster.local/ns/foo/sa/sleep")}}, tls, true},
		{"principal with scheme never matches", &security.Match{Principals: []*security.StringMatch{exactM("spiffe://cluster.local/ns/foo/sa/sleep")}}, tls, false},
		{"principal prefix", &security.Match{Principals: []*security.StringMatch{prefixM("cluster.local/ns/foo/")}}, tls, true},
		{"principal suffix", &security.Match{Principals: []*security.StringMatch{suffixM("/sa/sleep")}}, tls, true},
		{"principal presence, mTLS", &security.Match{Principals: []*security.StringMatch{presenceM()}}, tls, true},
		{"principal presence, plaintext", &security.Match{Principals: []*security.StringMatch{presenceM()}}, plain, false},
		{"not principal, plaintext", &security.Match{NotPrincipals: []*security.StringMatch{presenceM()}}, plain, true},
		{"not principal excludes", &security.Match{NotPrincipals: []*security.StringMatch{exactM("cluster.local/ns/foo/sa/sleep")}}, tls, false},
		{"namespace", &security.Match{Namespaces: []*security.StringMatch{exactM("foo")}}, tls, true},
		{"namespace, plaintext", &security.Match{Namespaces: []*security.StringMatch{exactM("foo")}}, plain, false},
		{"one of namespaces", &security.Match{Namespaces: []*security.StringMatch{exactM("x"), exactM("foo")}}, tls, true},
		{"service account", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "foo", ServiceAccount: "sleep"}}}, tls, true},
		{"service account other ns", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "bar", ServiceAccount: "sleep"}}}, tls, false},
		{"not service account", &security.Match{NotServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "foo", ServiceAccount: "sleep"}}}, tls, false},
		{"source ip", &security.Match{SourceIps: []*security.Address{cidr("10.0.0.0/24")}}, tls, true},
		{"not source ip", &security.Match{NotSourceIps: []*security.Address{cidr("10.0.0.1/32")}}, tls, false},
		{"destination ip", &security.Match{DestinationIps: []*security.Address{cidr("10.0.1.5/32")}}, tls, true},
		{"destination ip miss", &security.Match{DestinationIps: []*security.Address{cidr("10.0.2.0/24")}}, tls, false},
		{"port", &security.Match{DestinationPorts: []uint32{80, 8080}}, tls, true},
		{"not port", &security.Match{NotDestinationPorts: []uint32{8080}}, tls, false},
		{"all fields must hold", &security.Match{Namespaces: []*security.StringMatch{exactM("foo")}, DestinationPorts: []uint32{9090}}, tls, false},
		{"empty match matches nothing", &security.Match{}, tls, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := compile(t, policy("p", security.Action_ALLOW, []*security.Rules{rule(tc.m)}))[0]
			if got := p.Matches(tc.c); got != tc.want {
				t.Fatalf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNesting(t *testing.T) {
	// (namespace a OR namespace foo) AND port 80, as Istio's "from" and
	// "to" clauses of one rule; a second group allows port 9090 to anyone.
	p := compile(t, policy("p", security.Action_ALLOW,
		[]*security.Rules{
			rule(&security.Match{Namespaces: []*security.StringMatch{exactM("a")}}, &security.Match{Namespaces: []*security.StringMatch{exactM("foo")}}),
			rule(&security.Match{DestinationPorts: []uint32{80}}),
		},
		[]*security.Rules{rule(&security.Match{DestinationPorts: []uint32{9090}})},
	))[0]
	for _, tc := range []struct {
		c    Conn
		want bool
	}{
		{conn(sleep, "10.0.0.1", "10.0.1.5:80"), true},
		{conn(other, "10.0.0.1", "10.0.1.5:80"), false},
		{conn(sleep, "10.0.0.1", "10.0.1.5:81"), false},
		{conn(other, "10.0.0.1", "10.0.1.5:9090"), true},
	} {
		if got := p.Matches(tc.c); got != tc.want {
			t.Errorf("%v: Matches = %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestEmptyShapes(t *testing.T) {
	c := conn(sleep, "10.0.0.1", "10.0.1.5:80")
	for _, tc := range []struct {
		name string
		a    *security.Authorization
		want bool
	}{
		{"no groups", policy("p", security.Action_ALLOW), false},
		{"a group without rules", policy("p", security.Action_ALLOW, []*security.Rules{}), true},
		{"a rule without matches", policy("p", security.Action_ALLOW, []*security.Rules{rule()}), true},
		{"a rule with only an empty match", policy("p", security.Action_ALLOW, []*security.Rules{rule(&security.Match{})}), false},
		// What Istio's istiod sends for a DENY rule whose only condition
		// was L7 (to: [{operation: {methods: [POST]}}]): the rule is
		// enforced without it, so it denies every connection, as Istio
		// documents ("more restrictive than requested").
		{"DENY: a rule with only an empty match", policy("p", security.Action_DENY, []*security.Rules{rule(&security.Match{})}), true},
		{"DENY: an empty match beside a narrower one", policy("p", security.Action_DENY, []*security.Rules{
			rule(&security.Match{DestinationPorts: []uint32{9090}}, &security.Match{})}), true},
		{"DENY: an empty match does not lift another rule", policy("p", security.Action_DENY, []*security.Rules{
			rule(&security.Match{}), rule(&security.Match{DestinationPorts: []uint32{9090}})}), false},
	} {
		if got := compile(t, tc.a)[0].Matches(c); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Istio's semantics across policies: DENY first, then ALLOW if any exists.
func TestDecide(t *testing.T) {
	allowSleep := policy("allow-sleep", security.Action_ALLOW, []*security.Rules{rule(&security.Match{Principals: []*security.StringMatch{exactM("cluster.local/ns/foo/sa/sleep")}})})
	allowNothing := policy("allow-nothing", security.Action_ALLOW)
	denyPort := policy("deny-9090", security.Action_DENY, []*security.Rules{rule(&security.Match{DestinationPorts: []uint32{9090}})})
	denyPlaintext := policy("deny-plaintext", security.Action_DENY, []*security.Rules{rule(&security.Match{NotPrincipals: []*security.StringMatch{presenceM()}})})
	allowAll := policy("allow-all", security.Action_ALLOW, []*security.Rules{})

	sleep80 := conn(sleep, "10.0.0.1", "10.0.1.5:80")
	other80 := conn(other, "10.0.0.2", "10.0.1.5:80")
	sleep9090 := conn(sleep, "10.0.0.1", "10.0.1.5:9090")
	plain80 := conn(spiffe.Identity{}, "10.0.0.3", "10.0.1.5:80")
	for _, tc := range []struct {
		name     string
		policies []*security.Authorization
		c        Conn
		allow    bool
		by       string
	}{
		{"no policies allow", nil, other80, true, ""},
		{"allow-nothing denies", []*security.Authorization{allowNothing}, sleep80, false, ""},
		{"allowed principal", []*security.Authorization{allowSleep}, sleep80, true, "foo/allow-sleep"},
		{"other principal refused", []*security.Authorization{allowSleep}, other80, false, ""},
		{"deny wins over allow", []*security.Authorization{allowSleep, denyPort}, sleep9090, false, "foo/deny-9090"},
		{"deny alone lets the rest in", []*security.Authorization{denyPort}, other80, true, ""},
		{"STRICT-like deny of plaintext", []*security.Authorization{denyPlaintext, allowAll}, plain80, false, "foo/deny-plaintext"},
		{"allow-all lets mTLS in", []*security.Authorization{denyPlaintext, allowAll}, other80, true, "foo/allow-all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(compile(t, tc.policies...), tc.c)
			if d.Allow != tc.allow || d.Policy != tc.by {
				t.Fatalf("Decide = %+v, want allow=%v by %q", d, tc.allow, tc.by)
			}
		})
	}
}

// dryRun marks a as a dry-run policy (annotation istio.io/dry-run).
func dryRun(a *security.Authorization) *security.Authorization {
	a.DryRun = true
	return a
}

func TestDecideDryRun(t *testing.T) {
	denyOther := dryRun(policy("deny-other", security.Action_DENY, []*security.Rules{rule(&security.Match{Namespaces: []*security.StringMatch{exactM("bar")}})}))
	allowSleep := dryRun(policy("allow-sleep", security.Action_ALLOW, []*security.Rules{rule(&security.Match{Principals: []*security.StringMatch{exactM("cluster.local/ns/foo/sa/sleep")}})}))
	allowNothing := policy("allow-nothing", security.Action_ALLOW)
	sleep80 := conn(sleep, "10.0.0.1", "10.0.1.5:80")
	other80 := conn(other, "10.0.0.2", "10.0.1.5:80")
	type outcome struct {
		allow bool
		by    string
	}
	for _, tc := range []struct {
		name     string
		policies []*security.Authorization
		c        Conn
		real     outcome
		dry      *outcome // nil: no dry-run outcome expected
	}{
		{"dry-run DENY is not enforced", []*security.Authorization{denyOther}, other80, outcome{true, ""}, &outcome{false, "foo/deny-other"}},
		{"dry-run DENY that does not match", []*security.Authorization{denyOther}, sleep80, outcome{true, ""}, &outcome{true, ""}},
		{"dry-run ALLOW does not make ALLOW policies exist", []*security.Authorization{allowSleep}, other80, outcome{true, ""}, &outcome{false, ""}},
		{"dry-run ALLOW that matches", []*security.Authorization{allowSleep}, sleep80, outcome{true, ""}, &outcome{true, "foo/allow-sleep"}},
		{"dry-run ALLOW does not admit past an enforced allow-nothing", []*security.Authorization{allowNothing, allowSleep}, sleep80, outcome{false, ""}, &outcome{true, "foo/allow-sleep"}},
		{"enforced DENY stays enforced beside a dry-run ALLOW", []*security.Authorization{
			policy("deny-bar", security.Action_DENY, []*security.Rules{rule(&security.Match{Namespaces: []*security.StringMatch{exactM("bar")}})}),
			dryRun(policy("allow-bar", security.Action_ALLOW, []*security.Rules{rule(&security.Match{Namespaces: []*security.StringMatch{exactM("bar")}})})),
		}, other80, outcome{false, "foo/deny-bar"}, &outcome{false, "foo/deny-bar"}},
		{"enforced policies alone give no dry-run outcome", []*security.Authorization{allowNothing}, sleep80, outcome{false, ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(compile(t, tc.policies...), tc.c)
			if d.Allow != tc.real.allow || d.Policy != tc.real.by {
				t.Fatalf("Decide = %+v, want allow=%v by %q", d, tc.real.allow, tc.real.by)
			}
			switch {
			case tc.dry == nil && d.DryRun != nil:
				t.Fatalf("dry-run outcome %+v, want none", *d.DryRun)
			case tc.dry != nil && d.DryRun == nil:
				t.Fatalf("no dry-run outcome, want allow=%v by %q", tc.dry.allow, tc.dry.by)
			case tc.dry != nil && (d.DryRun.Allow != tc.dry.allow || d.DryRun.Policy != tc.dry.by):
				t.Fatalf("dry-run outcome %+v, want allow=%v by %q", *d.DryRun, tc.dry.allow, tc.dry.by)
			}
		})
	}
}

// withUnknown gives m a field its schema does not name, as a newer
// istiod's would be.
func withUnknown[M interface{ ProtoReflect() protoreflect.Message }](m M) M {
	m.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	return m
}

func TestUnknownFieldsFailClosed(t *testing.T) {
	fromBar := func() *security.Match {
		return &security.Match{Namespaces: []*security.StringMatch{exactM("bar")}}
	}
	other80 := conn(other, "10.0.0.2", "10.0.1.5:80")
	for _, tc := range []struct {
		name    string
		a       *security.Authorization
		allow   bool
		unknown []string
	}{
		// Without the unknown field this ALLOW admits bar; with it, that
		// group matches nothing and the ALLOW refuses everyone.
		{"ALLOW with an unknown field in a match", policy("allow-bar", security.Action_ALLOW, []*security.Rules{rule(withUnknown(fromBar()))}), false, []string{"groups[0]"}},
		{"ALLOW with an unknown field in a rules", policy("allow-bar", security.Action_ALLOW, []*security.Rules{withUnknown(rule(fromBar()))}), false, []string{"groups[0]"}},
		{"ALLOW with an unknown field of its own", withUnknown(policy("allow-bar", security.Action_ALLOW, []*security.Rules{rule(fromBar())})), false, []string{"authorization"}},
		// A DENY keeps what it knows, so it still denies bar.
		{"DENY with an unknown field in a match", policy("deny-bar", security.Action_DENY, []*security.Rules{rule(withUnknown(fromBar()))}), false, []string{"groups[0]"}},
		{"DENY with an unknown field of its own", withUnknown(policy("deny-bar", security.Action_DENY, []*security.Rules{rule(fromBar())})), false, []string{"authorization"}},
		{"ALLOW without unknown fields", policy("allow-bar", security.Action_ALLOW, []*security.Rules{rule(fromBar())}), true, nil},
		// A string match of a kind this ztunnel does not know (no known
		// type, an unknown field) is no reason to drop a DENY: it holds
		// for every value, and in a not_ list it excludes nothing.
		{"DENY by a principal match of an unknown kind", policy("deny-new", security.Action_DENY, []*security.Rules{rule(&security.Match{
			Principals: []*security.StringMatch{withUnknown(&security.StringMatch{})}})}), false, []string{"groups[0]"}},
		{"DENY excepting by a match of an unknown kind", policy("deny-bar", security.Action_DENY, []*security.Rules{rule(&security.Match{
			Namespaces: []*security.StringMatch{exactM("bar")}, NotNamespaces: []*security.StringMatch{withUnknown(&security.StringMatch{})}})}), false, []string{"groups[0]"}},
		{"ALLOW by a principal match of an unknown kind", policy("allow-new", security.Action_ALLOW, []*security.Rules{rule(&security.Match{
			Principals: []*security.StringMatch{withUnknown(&security.StringMatch{})}})}), false, []string{"groups[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := compile(t, tc.a)
			if !slices.Equal(ps[0].Unknown, tc.unknown) {
				t.Errorf("Unknown = %q, want %q", ps[0].Unknown, tc.unknown)
			}
			if d := Decide(ps, other80); d.Allow != tc.allow {
				t.Errorf("Decide = %+v, want allow=%v", d, tc.allow)
			}
		})
	}
}

func TestApplies(t *testing.T) {
	global := &Policy{Name: "g", Namespace: "istio-system", Scope: security.Scope_GLOBAL}
	ns := &Policy{Name: "n", Namespace: "foo", Scope: security.Scope_NAMESPACE}
	sel := &Policy{Name: "s", Namespace: "foo", Scope: security.Scope_WORKLOAD_SELECTOR}
	if !global.Applies("bar", nil) || !ns.Applies("foo", nil) || ns.Applies("bar", nil) {
		t.Error("scope GLOBAL or NAMESPACE misapplied")
	}
	if sel.Applies("foo", nil) || !sel.Applies("foo", []string{"foo/s"}) || sel.Applies("foo", []string{"bar/s"}) {
		t.Error("WORKLOAD_SELECTOR misapplied")
	}
}

func TestCompileRejectsBadResources(t *testing.T) {
	for _, tc := range []struct {
		name  string
		a     *security.Authorization
		field string
	}{
		{"no name", &security.Authorization{Namespace: "foo"}, "name"},
		{"bad action", &security.Authorization{Name: "p", Namespace: "foo", Action: 7}, "action"},
		{"bad scope", &security.Authorization{Name: "p", Namespace: "foo", Scope: 9}, "scope"},
		{"bad port", policy("p", security.Action_ALLOW, []*security.Rules{rule(&security.Match{DestinationPorts: []uint32{70000}})}), "destination_ports[0]"},
		{"bad address", policy("p", security.Action_ALLOW, []*security.Rules{rule(&security.Match{SourceIps: []*security.Address{{Address: []byte{1, 2, 3}, Length: 8}}})}), "source_ips[0]"},
		{"bad prefix length", policy("p", security.Action_ALLOW, []*security.Rules{rule(&security.Match{DestinationIps: []*security.Address{{Address: []byte{10, 0, 0, 0}, Length: 33}}})}), "destination_ips[0]"},
		{"string match without type", policy("p", security.Action_ALLOW, []*security.Rules{rule(&security.Match{Principals: []*security.StringMatch{{}}})}), "principals[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.a)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Compile: %v; want an error naming %q", err, tc.field)
			}
		})
	}
}
