package policy

import (
	"maps"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

type (
	ap        = securityv1beta1.AuthorizationPolicy
	rule      = securityv1beta1.Rule
	source    = securityv1beta1.Source
	operation = securityv1beta1.Operation
	cond      = securityv1beta1.Condition
)

const (
	allowAP = securityv1beta1.AuthorizationPolicy_ALLOW
	denyAP  = securityv1beta1.AuthorizationPolicy_DENY
)

func from(ss ...*source) []*securityv1beta1.Rule_From {
	var out []*securityv1beta1.Rule_From
	for _, s := range ss {
		out = append(out, &securityv1beta1.Rule_From{Source: s})
	}
	return out
}

func to(os ...*operation) []*securityv1beta1.Rule_To {
	var out []*securityv1beta1.Rule_To
	for _, o := range os {
		out = append(out, &securityv1beta1.Rule_To{Operation: o})
	}
	return out
}

// nsPolicy is the expected output skeleton for a policy "p" in "foo".
func nsPolicy(action security.Action, gs ...*security.Group) *security.Authorization {
	return &security.Authorization{Name: "p", Namespace: "foo", Scope: security.Scope_NAMESPACE, Action: action, Groups: gs}
}

func TestTranslateAuthorizationPolicy(t *testing.T) {
	const sleep = "cluster.local/ns/default/sa/sleep"
	tests := []struct {
		name        string
		namespace   string // "foo" when empty
		root        string
		spec        *ap
		want        *security.Authorization // nil: skipped
		ignored     []string
		invalid     []string
		selector    map[string]string
		skipContain string
		annotations map[string]string
	}{
		{
			// https://istio.io/latest/docs/reference/config/security/authorization-policy/ "allow-nothing"
			name: "allow-nothing",
			spec: &ap{},
			want: nsPolicy(security.Action_ALLOW),
		},
		{
			name: "allow-all",
			spec: &ap{Action: allowAP, Rules: []*rule{{}}},
			want: nsPolicy(security.Action_ALLOW, group()),
		},
		{
			name: "deny-all",
			spec: &ap{Action: denyAP, Rules: []*rule{{}}},
			want: nsPolicy(security.Action_DENY, group()),
		},
		{
			name: "deny without rules denies nothing",
			spec: &ap{Action: denyAP},
			want: nsPolicy(security.Action_DENY),
		},
		{
			name: "deny by namespace",
			spec: &ap{Action: denyAP, Rules: []*rule{{From: from(&source{NotNamespaces: []string{"foo"}})}}},
			want: nsPolicy(security.Action_DENY, group(rules(&security.Match{NotNamespaces: strs(exact("foo"))}))),
		},
		{
			name: "allow from a principal on a port",
			spec: &ap{Rules: []*rule{{
				From: from(&source{Principals: []string{sleep}}),
				To:   to(&operation{Ports: []string{"8080"}}),
			}}},
			want: nsPolicy(security.Action_ALLOW, group(
				rules(&security.Match{Principals: strs(exact(sleep))}),
				rules(&security.Match{DestinationPorts: []uint32{8080}}),
			)),
		},
		{
			name: "principal and namespace wildcards",
			spec: &ap{Rules: []*rule{{From: from(&source{
				Principals: []string{"*", "*/sa/bar", "cluster.local/ns/x/*"},
				Namespaces: []string{"prod-*", "*-test"},
			})}}},
			want: nsPolicy(security.Action_ALLOW, group(rules(&security.Match{
				Principals: strs(presence(), suffix("/sa/bar"), prefix("cluster.local/ns/x/")),
				Namespaces: strs(prefix("prod-"), suffix("-test")),
			}))),
		},
		{
			name: "sources are alternatives, fields of one source all hold",
			spec: &ap{Rules: []*rule{{
				From: from(&source{Principals: []string{sleep}, Namespaces: []string{"default"}}, &source{Namespaces: []string{"bar"}}),
				To:   to(&operation{Ports: []string{"80"}}, &operation{Ports: []string{"443", "8443"}}),
			}, {
				From: from(&source{Namespaces: []string{"baz"}}),
			}}},
			want: nsPolicy(security.Action_ALLOW,
				group(
					rules(&security.Match{Principals: strs(exact(sleep)), Namespaces: strs(exact("default"))}, &security.Match{Namespaces: strs(exact("bar"))}),
					rules(&security.Match{DestinationPorts: []uint32{80}}, &security.Match{DestinationPorts: []uint32{443, 8443}}),
				),
				group(rules(&security.Match{Namespaces: strs(exact("baz"))})),
			),
		},
		{
			name: "ipBlocks",
			spec: &ap{Rules: []*rule{{From: from(&source{
				IpBlocks:    []string{"10.0.0.0/8", "203.0.113.4", "10.1.2.3/16", "2001:db8::1", "::ffff:192.0.2.0/120"},
				NotIpBlocks: []string{"10.9.0.0/16"},
			})}}},
			want: nsPolicy(security.Action_ALLOW, group(rules(&security.Match{
				SourceIps:    addrs("10.0.0.0/8", "203.0.113.4/32", "10.1.0.0/16", "2001:db8::1/128", "192.0.2.0/24"),
				NotSourceIps: addrs("10.9.0.0/16"),
			}))),
		},
		{
			name: "not variants",
			spec: &ap{Rules: []*rule{{
				From: from(&source{
					NotPrincipals:      []string{"*"},
					NotNamespaces:      []string{"kube-*"},
					NotIpBlocks:        []string{"192.168.0.0/16"},
					NotServiceAccounts: []string{"bar/builder", "robot"},
				}),
				To: to(&operation{NotPorts: []string{"22"}}),
			}}},
			want: nsPolicy(security.Action_ALLOW, group(
				rules(&security.Match{
					NotPrincipals:      strs(presence()),
					NotNamespaces:      strs(prefix("kube-")),
					NotSourceIps:       addrs("192.168.0.0/16"),
					NotServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "bar", ServiceAccount: "builder"}, {Namespace: "foo", ServiceAccount: "robot"}},
				}),
				rules(&security.Match{NotDestinationPorts: []uint32{22}}),
			)),
		},
		{
			name: "L4 when conditions",
			spec: &ap{Rules: []*rule{{When: []*cond{
				{Key: "source.ip", Values: []string{"10.0.0.1"}},
				{Key: "destination.port", NotValues: []string{"15021"}},
				{Key: "source.namespace", Values: []string{"foo"}},
				{Key: "source.principal", NotValues: []string{sleep}},
				{Key: "destination.ip", Values: []string{"fd00::/64"}},
			}}}},
			want: nsPolicy(security.Action_ALLOW, group(
				rules(&security.Match{SourceIps: addrs("10.0.0.1/32")}),
				rules(&security.Match{NotDestinationPorts: []uint32{15021}}),
				rules(&security.Match{Namespaces: strs(exact("foo"))}),
				rules(&security.Match{NotPrincipals: strs(exact(sleep))}),
				rules(&security.Match{DestinationIps: addrs("fd00::/64")}),
			)),
		},
		{
			name: "L7 allow drops the rule",
			spec: &ap{Rules: []*rule{
				{From: from(&source{Principals: []string{sleep}}), To: to(&operation{Methods: []string{"GET"}, Ports: []string{"80"}})},
				{From: from(&source{Namespaces: []string{"bar"}})},
			}},
			want:    nsPolicy(security.Action_ALLOW, group(rules(&security.Match{Namespaces: strs(exact("bar"))}))),
			ignored: []string{"rules[0].to[0].operation.methods"},
		},
		{
			name: "L7 allow with every rule dropped allows nothing",
			spec: &ap{Rules: []*rule{{
				From: from(&source{RequestPrincipals: []string{"*"}, RemoteIpBlocks: []string{"1.2.3.4"}}),
				When: []*cond{{Key: "request.auth.claims[iss]", Values: []string{"x"}}},
			}}},
			want: nsPolicy(security.Action_ALLOW),
			ignored: []string{
				"rules[0].from[0].source.requestPrincipals",
				"rules[0].from[0].source.remoteIpBlocks",
				"rules[0].when[0]",
			},
		},
		{
			name: "L7 deny keeps the L4 part",
			spec: &ap{Action: denyAP, Rules: []*rule{{
				From: from(&source{Namespaces: []string{"bar"}, RequestPrincipals: []string{"*"}}),
				To:   to(&operation{Paths: []string{"/admin"}, Ports: []string{"8080"}}),
				When: []*cond{{Key: "request.headers[x]", Values: []string{"y"}}, {Key: "source.ip", Values: []string{"10.0.0.0/8"}}},
			}}},
			want: nsPolicy(security.Action_DENY, group(
				rules(&security.Match{Namespaces: strs(exact("bar"))}),
				rules(&security.Match{DestinationPorts: []uint32{8080}}),
				rules(&security.Match{SourceIps: addrs("10.0.0.0/8")}),
			)),
			ignored: []string{
				"rules[0].from[0].source.requestPrincipals",
				"rules[0].to[0].operation.paths",
				"rules[0].when[0]",
			},
		},
		{
			// The only "to" alternative is all L7: at L4 it may match any
			// connection, so only "from" constrains the deny.
			name: "L7-only operation in deny leaves no empty match",
			spec: &ap{Action: denyAP, Rules: []*rule{{
				From: from(&source{Principals: []string{sleep}}),
				To:   to(&operation{Ports: []string{"80"}}, &operation{Methods: []string{"DELETE"}}),
			}}},
			want:    nsPolicy(security.Action_DENY, group(rules(&security.Match{Principals: strs(exact(sleep))}))),
			ignored: []string{"rules[0].to[1].operation.methods"},
		},
		{
			name:        "AUDIT skipped",
			spec:        &ap{Action: securityv1beta1.AuthorizationPolicy_AUDIT, Rules: []*rule{{}}},
			skipContain: "AUDIT",
		},
		{
			name: "CUSTOM skipped",
			spec: &ap{
				Action:       securityv1beta1.AuthorizationPolicy_CUSTOM,
				ActionDetail: &securityv1beta1.AuthorizationPolicy_Provider{Provider: &securityv1beta1.AuthorizationPolicy_ExtensionProvider{Name: "ext-authz"}},
				Rules:        []*rule{{}},
			},
			skipContain: "CUSTOM",
		},
		{
			name: "targetRefs skipped",
			spec: &ap{
				TargetRefs: []*typev1beta1.PolicyTargetReference{{Kind: "Service", Name: "reviews"}},
				Rules:      []*rule{{}},
			},
			skipContain: "waypoint",
		},
		{
			name:        "targetRef skipped",
			spec:        &ap{TargetRef: &typev1beta1.PolicyTargetReference{Kind: "Gateway", Group: "gateway.networking.k8s.io", Name: "waypoint"}},
			skipContain: "waypoint",
		},
		{
			name: "bad port in allow matches nothing",
			spec: &ap{Rules: []*rule{{
				From: from(&source{Principals: []string{sleep}}),
				To:   to(&operation{Ports: []string{"80", "http"}}),
			}}},
			want:    nsPolicy(security.Action_ALLOW),
			invalid: []string{"rules[0].to[0].operation.ports[1]"},
		},
		{
			name: "bad port in deny drops the port constraint",
			spec: &ap{Action: denyAP, Rules: []*rule{{
				From: from(&source{Namespaces: []string{"bar"}}),
				To:   to(&operation{Ports: []string{"80", "65536"}}),
			}}},
			want:    nsPolicy(security.Action_DENY, group(rules(&security.Match{Namespaces: strs(exact("bar"))}))),
			invalid: []string{"rules[0].to[0].operation.ports[1]"},
		},
		{
			name: "bad CIDR and when port",
			spec: &ap{Rules: []*rule{
				{From: from(&source{IpBlocks: []string{"10.0.0.300/8"}})},
				{When: []*cond{{Key: "destination.port", Values: []string{"-1"}}}},
				{From: from(&source{ServiceAccounts: []string{"a/b/c"}})},
			}},
			want: nsPolicy(security.Action_ALLOW),
			invalid: []string{
				"rules[0].from[0].source.ipBlocks[0]",
				"rules[1].when[0].values[0]",
				"rules[2].from[0].source.serviceAccounts[0]",
			},
		},
		{
			name:      "root namespace is global",
			namespace: "istio-system",
			spec:      &ap{Action: denyAP, Rules: []*rule{{From: from(&source{IpBlocks: []string{"192.0.2.1"}})}}},
			want: &security.Authorization{
				Name: "p", Namespace: "istio-system", Scope: security.Scope_GLOBAL, Action: security.Action_DENY,
				Groups: groups(group(rules(&security.Match{SourceIps: addrs("192.0.2.1/32")}))),
			},
		},
		{
			name:      "custom root namespace",
			namespace: "mesh-root",
			root:      "mesh-root",
			spec:      &ap{},
			want:      &security.Authorization{Name: "p", Namespace: "mesh-root", Scope: security.Scope_GLOBAL},
		},
		{
			// https://istio.io/latest/docs/tasks/security/authorization/authz-dry-run/
			name:        "dry-run annotation",
			spec:        &ap{Action: denyAP, Rules: []*rule{{}}},
			annotations: map[string]string{DryRunAnnotation: "true"},
			want:        &security.Authorization{Name: "p", Namespace: "foo", Scope: security.Scope_NAMESPACE, Action: security.Action_DENY, Groups: groups(group()), DryRun: true},
		},
		{
			name:        "dry-run false is enforced",
			spec:        &ap{Action: denyAP, Rules: []*rule{{}}},
			annotations: map[string]string{DryRunAnnotation: "false"},
			want:        nsPolicy(security.Action_DENY, group()),
		},
		{
			name:        "unreadable dry-run value is reported and enforced",
			spec:        &ap{Action: denyAP, Rules: []*rule{{}}},
			annotations: map[string]string{DryRunAnnotation: "yes please"},
			want:        nsPolicy(security.Action_DENY, group()),
			invalid:     []string{"metadata.annotations[istio.io/dry-run]"},
		},
		{
			name:      "selector in root namespace",
			namespace: "istio-system",
			spec:      &ap{Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "httpbin"}}},
			want:      &security.Authorization{Name: "p", Namespace: "istio-system", Scope: security.Scope_WORKLOAD_SELECTOR},
			selector:  map[string]string{"app": "httpbin"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := tc.namespace
			if ns == "" {
				ns = "foo"
			}
			got, report, ok := TranslateAuthorizationPolicy(Input{Name: "p", Namespace: ns, RootNamespace: tc.root, Annotations: tc.annotations, Spec: tc.spec})
			if ok != (tc.want != nil) {
				t.Fatalf("ok = %v, report %+v", ok, report)
			}
			if !ok {
				if got != nil {
					t.Errorf("skipped policy returned %v", got)
				}
				if !strings.Contains(report.Skipped, tc.skipContain) {
					t.Errorf("Skipped = %q, want it to mention %q", report.Skipped, tc.skipContain)
				}
				return
			}
			checkAuthz(t, got, tc.want)
			checkPaths(t, "ignored", report.Ignored, tc.ignored)
			checkPaths(t, "invalid", report.Invalid, tc.invalid)
			if !maps.Equal(report.Selector, tc.selector) || (tc.selector == nil) != (report.Selector == nil) {
				t.Errorf("selector = %v, want %v", report.Selector, tc.selector)
			}
		})
	}
}
