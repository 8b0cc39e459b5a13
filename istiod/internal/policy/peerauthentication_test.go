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

// denyPlaintextWant is the expected policy: one match, no principal, with the
// given port constraint.
func denyPlaintextWant(name, ns string, m *security.Match) *security.Authorization {
	m.NotPrincipals = strs(presence())
	return &security.Authorization{
		Name: name, Namespace: ns, Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_DENY,
		Groups: groups(group(rules(m))),
	}
}

func TestTranslatePeerAuthentication(t *testing.T) {
	const name = "converted_peer_authentication_pa"
	ports := func(m map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode) map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS {
		out := map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		for p, mode := range m {
			out[p] = mtls(mode)
		}
		return out
	}
	tests := []struct {
		name      string
		spec      *pa
		inherited securityv1beta1.PeerAuthentication_MutualTLS_Mode
		want      *security.Authorization
		invalid   []string
	}{
		{name: "STRICT", spec: &pa{Selector: appSelector, Mtls: mtls(strictMode)}, want: denyPlaintextWant(name, "foo", &security.Match{})},
		{name: "PERMISSIVE", spec: &pa{Selector: appSelector, Mtls: mtls(permissiveMode)}, inherited: strictMode},
		{name: "DISABLE", spec: &pa{Selector: appSelector, Mtls: mtls(disableMode)}, inherited: strictMode},
		{name: "UNSET inherits PERMISSIVE", spec: &pa{Selector: appSelector}},
		{name: "UNSET inherits STRICT", spec: &pa{Selector: appSelector}, inherited: strictMode, want: denyPlaintextWant(name, "foo", &security.Match{})},
		{name: "no selector makes no resource", spec: &pa{Mtls: mtls(strictMode)}},
		{
			name:      "STRICT with PERMISSIVE and DISABLE ports exempts them",
			spec:      &pa{Selector: appSelector, Mtls: mtls(strictMode), PortLevelMtls: ports(map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{9090: disableMode, 8080: permissiveMode, 443: strictMode, 53: unsetMode})},
			want:      denyPlaintextWant(name, "foo", &security.Match{NotDestinationPorts: []uint32{8080, 9090}}),
			inherited: permissiveMode,
		},
		{
			// Each STRICT port is an alternative in one Match: separate
			// ANDed Rules would require the port to be both and deny nothing.
			name: "PERMISSIVE with STRICT ports denies plaintext on those ports only",
			spec: &pa{Selector: appSelector, Mtls: mtls(permissiveMode), PortLevelMtls: ports(map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{9090: strictMode, 8080: strictMode, 80: permissiveMode})},
			want: denyPlaintextWant(name, "foo", &security.Match{DestinationPorts: []uint32{8080, 9090}}),
		},
		{
			name:      "UNSET under a STRICT namespace with a PERMISSIVE port exempts it",
			spec:      &pa{Selector: appSelector, PortLevelMtls: ports(map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: permissiveMode})},
			inherited: strictMode,
			want:      denyPlaintextWant(name, "foo", &security.Match{NotDestinationPorts: []uint32{8080}}),
		},
		{
			name: "UNSET under PERMISSIVE with a STRICT port",
			spec: &pa{Selector: appSelector, PortLevelMtls: ports(map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{5432: strictMode})},
			want: denyPlaintextWant(name, "foo", &security.Match{DestinationPorts: []uint32{5432}}),
		},
		{
			name: "PERMISSIVE with only PERMISSIVE ports",
			spec: &pa{Selector: appSelector, Mtls: mtls(permissiveMode), PortLevelMtls: ports(map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{80: permissiveMode})},
		},
		{
			name:    "out of range exemption is not applied",
			spec:    &pa{Selector: appSelector, Mtls: mtls(strictMode), PortLevelMtls: ports(map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{70000: permissiveMode})},
			want:    denyPlaintextWant(name, "foo", &security.Match{}),
			invalid: []string{"portLevelMtls[70000]"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, report, ok := TranslatePeerAuthentication("pa", "foo", tc.spec, tc.inherited)
			if ok != (tc.want != nil) {
				t.Fatalf("ok = %v, report %+v", ok, report)
			}
			if !ok {
				if got != nil || report.Skipped == "" {
					t.Errorf("skip: got %v, Skipped %q", got, report.Skipped)
				}
			} else {
				checkAuthz(t, got, tc.want)
				if !maps.Equal(report.Selector, appSelector.MatchLabels) {
					t.Errorf("selector = %v, want %v", report.Selector, appSelector.MatchLabels)
				}
			}
			checkPaths(t, "invalid", report.Invalid, tc.invalid)
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
		a, _, ok := TranslatePeerAuthentication("pa", "foo", &pa{Selector: appSelector, Mtls: mtls(tc.mode), PortLevelMtls: levels}, unsetMode)
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
