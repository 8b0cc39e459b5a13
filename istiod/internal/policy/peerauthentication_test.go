package policy

import (
	"maps"
	"slices"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

type pa = securityv1beta1.PeerAuthentication

const (
	strictMode     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
	permissiveMode = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
	disableMode    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
	unsetMode      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
)

func mtls(m securityv1beta1.PeerAuthentication_MutualTLS_Mode) *securityv1beta1.PeerAuthentication_MutualTLS {
	return &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
}

var appSelector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}

// denyPlaintext is the expected policy: one match, no principal, with the
// given port constraint.
func denyPlaintext(name, ns string, scope security.Scope, m *security.Match) *security.Authorization {
	m.NotPrincipals = strs(presence())
	return &security.Authorization{
		Name: name, Namespace: ns, Scope: scope, Action: security.Action_DENY,
		Groups: groups(group(rules(m))),
	}
}

func TestTranslatePeerAuthentication(t *testing.T) {
	tests := []struct {
		name      string
		namespace string
		spec      *pa
		want      *security.Authorization
		ignored   []string
		invalid   []string
		selector  map[string]string
	}{
		{
			name:      "mesh-wide STRICT",
			namespace: "istio-system",
			spec:      &pa{Mtls: mtls(strictMode)},
			want:      denyPlaintext("istio_converted_static_strict", "istio-system", security.Scope_GLOBAL, &security.Match{}),
		},
		{
			name:      "namespace STRICT",
			namespace: "foo",
			spec:      &pa{Mtls: mtls(strictMode)},
			want:      denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_NAMESPACE, &security.Match{}),
		},
		{
			name:      "selector STRICT",
			namespace: "foo",
			spec:      &pa{Selector: appSelector, Mtls: mtls(strictMode)},
			want:      denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_WORKLOAD_SELECTOR, &security.Match{}),
			selector:  map[string]string{"app": "db"},
		},
		{
			name:      "selector STRICT in root namespace is not mesh-wide",
			namespace: "istio-system",
			spec:      &pa{Selector: appSelector, Mtls: mtls(strictMode)},
			want:      denyPlaintext("converted_peer_authentication_pa", "istio-system", security.Scope_WORKLOAD_SELECTOR, &security.Match{}),
			selector:  map[string]string{"app": "db"},
		},
		{name: "PERMISSIVE", namespace: "foo", spec: &pa{Mtls: mtls(permissiveMode)}},
		{name: "DISABLE", namespace: "foo", spec: &pa{Mtls: mtls(disableMode)}},
		{name: "UNSET", namespace: "foo", spec: &pa{}},
		{
			name:      "STRICT with PERMISSIVE and DISABLE ports exempts them",
			namespace: "foo",
			spec: &pa{Selector: appSelector, Mtls: mtls(strictMode), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
				9090: mtls(disableMode), 8080: mtls(permissiveMode), 443: mtls(strictMode), 53: mtls(unsetMode),
			}},
			want:     denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_WORKLOAD_SELECTOR, &security.Match{NotDestinationPorts: []uint32{8080, 9090}}),
			selector: map[string]string{"app": "db"},
		},
		{
			// Each STRICT port is an alternative in one Match: separate
			// ANDed Rules would require the port to be both and deny nothing.
			name:      "PERMISSIVE with STRICT ports denies plaintext on those ports only",
			namespace: "foo",
			spec: &pa{Selector: appSelector, Mtls: mtls(permissiveMode), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
				9090: mtls(strictMode), 8080: mtls(strictMode), 80: mtls(permissiveMode),
			}},
			want:     denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_WORKLOAD_SELECTOR, &security.Match{DestinationPorts: []uint32{8080, 9090}}),
			selector: map[string]string{"app": "db"},
		},
		{
			name:      "UNSET with a STRICT port",
			namespace: "foo",
			spec: &pa{Selector: appSelector, PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
				5432: mtls(strictMode),
			}},
			want:     denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_WORKLOAD_SELECTOR, &security.Match{DestinationPorts: []uint32{5432}}),
			ignored:  []string{"mtls.mode"},
			selector: map[string]string{"app": "db"},
		},
		{
			name:      "PERMISSIVE with only PERMISSIVE ports",
			namespace: "foo",
			spec: &pa{Selector: appSelector, Mtls: mtls(permissiveMode), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
				80: mtls(permissiveMode),
			}},
			selector: map[string]string{"app": "db"},
		},
		{
			name:      "port level without selector is ignored",
			namespace: "foo",
			spec: &pa{Mtls: mtls(strictMode), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
				80: mtls(permissiveMode),
			}},
			want:    denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_NAMESPACE, &security.Match{}),
			ignored: []string{"portLevelMtls"},
		},
		{
			name:      "out of range exemption is not applied",
			namespace: "foo",
			spec: &pa{Selector: appSelector, Mtls: mtls(strictMode), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
				70000: mtls(permissiveMode),
			}},
			want:     denyPlaintext("converted_peer_authentication_pa", "foo", security.Scope_WORKLOAD_SELECTOR, &security.Match{}),
			invalid:  []string{"portLevelMtls[70000]"},
			selector: map[string]string{"app": "db"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, report, ok := TranslatePeerAuthentication("pa", tc.namespace, "", tc.spec)
			if ok != (tc.want != nil) {
				t.Fatalf("ok = %v, report %+v", ok, report)
			}
			if !ok {
				if got != nil || report.Skipped == "" {
					t.Errorf("skip: got %v, Skipped %q", got, report.Skipped)
				}
			} else {
				checkAuthz(t, got, tc.want)
			}
			checkPaths(t, "ignored", report.Ignored, tc.ignored)
			checkPaths(t, "invalid", report.Invalid, tc.invalid)
			if !maps.Equal(report.Selector, tc.selector) {
				t.Errorf("selector = %v, want %v", report.Selector, tc.selector)
			}
		})
	}
}

// TestPortLevelStrictSemantics evaluates the port-level results the way
// ztunnel does (a DENY matches when every Rules of a group has a Match
// whose fields all hold) for plaintext and mTLS connections on each port.
func TestPortLevelStrictSemantics(t *testing.T) {
	denies := func(a *security.Authorization, principal string, port uint32) bool {
		for _, g := range a.GetGroups() {
			all := true
			for _, r := range g.GetRules() {
				hit := false
				for _, m := range r.GetMatches() {
					ok := !(len(m.GetNotPrincipals()) > 0 && principal != "")
					if ps := m.GetDestinationPorts(); len(ps) > 0 && !slices.Contains(ps, port) {
						ok = false
					}
					if slices.Contains(m.GetNotDestinationPorts(), port) {
						ok = false
					}
					hit = hit || ok
				}
				all = all && hit
			}
			if all {
				return true
			}
		}
		return false
	}
	levels := map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{80: mtls(strictMode), 81: mtls(strictMode), 82: mtls(permissiveMode)}
	for _, tc := range []struct {
		mode        securityv1beta1.PeerAuthentication_MutualTLS_Mode
		plainDenied map[uint32]bool
	}{
		{permissiveMode, map[uint32]bool{80: true, 81: true, 82: false, 83: false}},
		{strictMode, map[uint32]bool{80: true, 81: true, 82: false, 83: true}},
	} {
		a, _, ok := TranslatePeerAuthentication("pa", "foo", "", &pa{Selector: appSelector, Mtls: mtls(tc.mode), PortLevelMtls: levels})
		if !ok {
			t.Fatalf("%v: no policy", tc.mode)
		}
		for port, want := range tc.plainDenied {
			if got := denies(a, "", port); got != want {
				t.Errorf("%v: plaintext to %d denied = %v, want %v", tc.mode, port, got, want)
			}
			if denies(a, "cluster.local/ns/foo/sa/x", port) {
				t.Errorf("%v: mTLS to %d denied", tc.mode, port)
			}
		}
	}
}
