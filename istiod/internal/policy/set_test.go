package policy

import (
	"slices"
	"testing"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

func peerAuth(ns, name string, age int, spec *pa) PeerAuthentication {
	return PeerAuthentication{Name: name, Namespace: ns, Created: time.Unix(int64(1000-age), 0), Spec: spec}
}

func selector(kv ...string) *typev1beta1.WorkloadSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &typev1beta1.WorkloadSelector{MatchLabels: m}
}

const strictName = "istio-system/istio_converted_static_strict"

// TestBuildPeerAuthenticationPrecedence follows Istio's documented
// PeerAuthentication examples: a mesh-wide STRICT policy, a namespace that
// relaxes it, a workload that relaxes its namespace, and a port exception.
func TestBuildPeerAuthenticationPrecedence(t *testing.T) {
	pas := []PeerAuthentication{
		peerAuth("istio-system", "default", 10, &pa{Mtls: mtls(strictMode)}),
		peerAuth("legacy", "default", 9, &pa{Mtls: mtls(permissiveMode)}),
		peerAuth("foo", "finance", 8, &pa{Selector: selector("app", "finance"), Mtls: mtls(permissiveMode)}),
		peerAuth("foo", "db", 7, &pa{Selector: selector("app", "db"), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{5432: mtls(permissiveMode)}}),
		// Younger than "db" and selecting the same pods: loses.
		peerAuth("foo", "db-strict", 1, &pa{Selector: selector("app", "db"), Mtls: mtls(strictMode)}),
		peerAuth("open", "default", 6, &pa{Mtls: mtls(disableMode)}),
		peerAuth("open", "api", 5, &pa{Selector: selector("app", "api"), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{8443: mtls(strictMode)}}),
	}
	s := Build("", nil, pas)

	for _, tc := range []struct {
		ns     string
		labels map[string]string
		want   []string
	}{
		{"foo", map[string]string{"app": "web"}, []string{strictName}},
		{"istio-system", nil, []string{strictName}},
		{"legacy", map[string]string{"app": "web"}, nil},
		{"foo", map[string]string{"app": "finance"}, nil},
		{"foo", map[string]string{"app": "db", "v": "1"}, []string{"foo/converted_peer_authentication_db"}},
		{"open", map[string]string{"app": "web"}, nil},
		{"open", map[string]string{"app": "api"}, []string{"open/converted_peer_authentication_api"}},
	} {
		if got := s.Attached(tc.ns, tc.labels); !slices.Equal(got, tc.want) {
			t.Errorf("Attached(%s, %v) = %v, want %v", tc.ns, tc.labels, got, tc.want)
		}
	}

	checkAuthz(t, s.Resources["foo/converted_peer_authentication_db"],
		denyPlaintextWant("converted_peer_authentication_db", "foo", &security.Match{NotDestinationPorts: []uint32{5432}}))
	checkAuthz(t, s.Resources["open/converted_peer_authentication_api"],
		denyPlaintextWant("converted_peer_authentication_api", "open", &security.Match{DestinationPorts: []uint32{8443}}))
	checkAuthz(t, s.Resources[strictName], denyPlaintextWant("istio_converted_static_strict", "istio-system", &security.Match{}))
	if _, ok := s.Resources["foo/converted_peer_authentication_finance"]; ok {
		t.Error("a PERMISSIVE workload policy under a STRICT mesh produced a DENY")
	}
	if got := len(s.Resources); got != 4 {
		t.Errorf("%d resources, want 4 (db, db-strict, api, static strict): %v", got, s.Resources)
	}
}

func TestBuildPeerAuthenticationReports(t *testing.T) {
	s := Build("", nil, []PeerAuthentication{
		peerAuth("foo", "old", 2, &pa{Mtls: mtls(permissiveMode)}),
		peerAuth("foo", "new", 1, &pa{Mtls: mtls(strictMode), PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{80: mtls(permissiveMode)}}),
	})
	if got := s.Attached("foo", nil); got != nil {
		t.Errorf("the younger STRICT namespace policy won: %v", got)
	}
	checkPaths(t, "ignored", s.Reports[Ref{KindPeerAuthentication, "foo", "new"}].Ignored, []string{"metadata.creationTimestamp", "portLevelMtls"})
	if r := s.Reports[Ref{KindPeerAuthentication, "foo", "old"}]; r.Summary() != "" {
		t.Errorf("old: %q", r.Summary())
	}
	if len(s.Resources) != 0 {
		t.Errorf("resources %v, want none: nothing is STRICT", s.Resources)
	}
}

func TestBuildAuthorizationPolicyAttachment(t *testing.T) {
	allowAll := []*securityv1beta1.Rule{{}}
	s := Build("mesh-root", []AuthorizationPolicy{
		{Name: "ns-wide", Namespace: "foo", Spec: &securityv1beta1.AuthorizationPolicy{Rules: allowAll}},
		{Name: "web", Namespace: "foo", Spec: &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "web"), Rules: allowAll}},
		{Name: "everywhere", Namespace: "mesh-root", Spec: &securityv1beta1.AuthorizationPolicy{Selector: selector("tier", "edge"), Rules: allowAll}},
		{Name: "waypoint", Namespace: "foo", Spec: &securityv1beta1.AuthorizationPolicy{
			TargetRefs: []*typev1beta1.PolicyTargetReference{{Kind: "Gateway", Group: "gateway.networking.k8s.io", Name: "waypoint"}},
		}},
	}, nil)
	for _, tc := range []struct {
		ns     string
		labels map[string]string
		want   []string
	}{
		{"foo", map[string]string{"app": "web"}, []string{"foo/web"}},
		{"foo", map[string]string{"app": "db"}, nil},
		{"bar", map[string]string{"app": "web"}, nil},
		{"bar", map[string]string{"tier": "edge"}, []string{"mesh-root/everywhere"}},
		{"foo", map[string]string{"app": "web", "tier": "edge"}, []string{"foo/web", "mesh-root/everywhere"}},
	} {
		if got := s.Attached(tc.ns, tc.labels); !slices.Equal(got, tc.want) {
			t.Errorf("Attached(%s, %v) = %v, want %v", tc.ns, tc.labels, got, tc.want)
		}
	}
	if _, ok := s.Resources["foo/ns-wide"]; !ok {
		t.Error("the namespace-wide policy is not served (ztunnel applies it by scope)")
	}
	if _, ok := s.Resources["foo/waypoint"]; ok {
		t.Error("a waypoint policy reached ztunnel")
	}
	if r := s.Reports[Ref{KindAuthorizationPolicy, "foo", "waypoint"}]; r.Skipped == "" {
		t.Error("the waypoint policy's report does not say why it was skipped")
	}
}

func TestChanged(t *testing.T) {
	base := []AuthorizationPolicy{{Name: "web", Namespace: "foo", Spec: &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "web")}}}
	prev := Build("", base, nil)

	same := Build("", slices.Clone(base), nil)
	if all, ns := Changed(prev, same); all || len(ns) != 0 {
		t.Errorf("no change: all=%v namespaces=%v", all, ns)
	}
	moved := Build("", []AuthorizationPolicy{{Name: "web", Namespace: "foo", Spec: &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "api")}}},
		[]PeerAuthentication{peerAuth("bar", "default", 1, &pa{Mtls: mtls(strictMode)})})
	if all, ns := Changed(prev, moved); all || !slices.Equal(ns, []string{"bar", "foo"}) {
		t.Errorf("selector and namespace mode changed: all=%v namespaces=%v, want [bar foo]", all, ns)
	}
	mesh := Build("", base, []PeerAuthentication{peerAuth("istio-system", "default", 1, &pa{Mtls: mtls(strictMode)})})
	if all, _ := Changed(prev, mesh); !all {
		t.Error("a mesh-wide mode change is not a change everywhere")
	}
	if all, _ := Changed(nil, prev); !all {
		t.Error("the first Set is not a change everywhere")
	}
}

// TestBuildPeerAuthenticationSelectorEdges follows Istio: an empty selector
// is no selector, and a selector in the root namespace selects nothing.
func TestBuildPeerAuthenticationSelectorEdges(t *testing.T) {
	s := Build("", nil, []PeerAuthentication{
		peerAuth("foo", "empty", 3, &pa{Selector: &typev1beta1.WorkloadSelector{}, Mtls: mtls(strictMode)}),
		peerAuth("foo", "web", 2, &pa{Selector: selector("app", "web"), Mtls: mtls(permissiveMode)}),
		peerAuth("istio-system", "root-selector", 1, &pa{Selector: selector("app", "x"), Mtls: mtls(strictMode)}),
	})
	if got := s.Attached("foo", map[string]string{"app": "db"}); !slices.Equal(got, []string{strictName}) {
		t.Errorf("an empty selector must set the namespace's mode (STRICT): %v", got)
	}
	if got := s.Attached("foo", map[string]string{"app": "web"}); got != nil {
		t.Errorf("a workload-level PERMISSIVE must win over the namespace: %v", got)
	}
	if got := s.Attached("istio-system", map[string]string{"app": "x"}); got != nil {
		t.Errorf("a selector in the root namespace selected a workload: %v", got)
	}
	checkPaths(t, "ignored", s.Reports[Ref{KindPeerAuthentication, "istio-system", "root-selector"}].Ignored, []string{"selector"})
}
