package policy

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// StaticStrictPolicyName names the Authorization made from a mesh-wide
// STRICT PeerAuthentication. The underscores cannot occur in a Kubernetes
// name, so it never collides with a user's policy; Istio uses the same.
const StaticStrictPolicyName = "istio_converted_static_strict"

// PeerAuthenticationPrefix prefixes the name of the Authorization made
// from any other PeerAuthentication, as in Istio.
const PeerAuthenticationPrefix = "converted_peer_authentication_"

// StaticStrict is the Authorization istiod attaches to every workload whose
// PeerAuthentication mode, inherited from its namespace or the mesh, is
// STRICT and which no workload-level PeerAuthentication selects: DENY any
// connection without a peer principal. It lives in the root namespace and
// is WORKLOAD_SELECTOR scoped, so it applies only where a workload lists
// it, which lets a narrower PERMISSIVE PeerAuthentication win (a DENY
// served by scope could not be relaxed).
func StaticStrict(rootNS string) *security.Authorization {
	if rootNS == "" {
		rootNS = DefaultRootNamespace
	}
	return denyPlaintext(StaticStrictPolicyName, rootNS, &security.Match{})
}

func denyPlaintext(name, namespace string, m *security.Match) *security.Authorization {
	m.NotPrincipals = []*security.StringMatch{{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}}
	return &security.Authorization{
		Name:      name,
		Namespace: namespace,
		Scope:     security.Scope_WORKLOAD_SELECTOR,
		Action:    security.Action_DENY,
		Groups:    []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{m}}}}},
	}
}

// effective resolves an UNSET mode to the inherited one, and an UNSET
// inheritance to PERMISSIVE, Istio's default. DISABLE allows plaintext,
// which for ztunnel is what PERMISSIVE does.
func effective(mode, inherited securityv1beta1.PeerAuthentication_MutualTLS_Mode) bool {
	if mode == securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
		mode = inherited
	}
	return mode == securityv1beta1.PeerAuthentication_MutualTLS_STRICT
}

// TranslatePeerAuthentication turns a workload-level PeerAuthentication
// (one with a selector) into the DENY policy that makes ztunnel refuse
// plaintext to the workloads that list it: a connection without a peer
// principal matches not_principals: [presence]. inherited is the mode of
// the workload's namespace, or of the mesh when the namespace sets none;
// an UNSET mode (of the resource or of one of its ports) takes it. When no
// port ends up STRICT there is nothing to deny and ok is false.
//
// Ports:
//   - mode STRICT with ports P.. PERMISSIVE or DISABLE: deny plaintext on
//     every port except P.. (not_destination_ports);
//   - any other mode with ports P.. STRICT: deny plaintext on P.. only
//     (destination_ports).
//
// All exceptions go into one Match. Istio once put each STRICT port in its
// own Rules of one Group; Rules are ANDed, so with two STRICT ports the
// policy required the destination port to equal both and never denied.
//
// Namespace- and mesh-wide PeerAuthentications produce no resource of
// their own: they decide which workloads get StaticStrict (see Build).
func TranslatePeerAuthentication(name, namespace string, spec *securityv1beta1.PeerAuthentication, inherited securityv1beta1.PeerAuthentication_MutualTLS_Mode) (*security.Authorization, Report, bool) {
	var report Report
	if spec == nil {
		report.Skipped = "no spec"
		return nil, report, false
	}
	if !hasSelector(spec) {
		report.Skipped = "no selector: a namespace or mesh mode, applied through " + StaticStrictPolicyName
		return nil, report, false
	}
	report.Selector = copyLabels(spec.GetSelector().GetMatchLabels())
	strict := effective(spec.GetMtls().GetMode(), inherited)

	var portsOut []uint32 // strict ports, or exempt ports when strict
	for port, m := range spec.GetPortLevelMtls() {
		pm := m.GetMode()
		if pm == securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			continue // the workload mode
		}
		if port == 0 || port > 65535 {
			// Ignoring a bad exemption is stricter; a bad STRICT port can
			// never be a connection's destination anyway.
			report.invalid(fmt.Sprintf("portLevelMtls[%d]", port), "port out of range 1..65535")
			continue
		}
		if portStrict := pm == securityv1beta1.PeerAuthentication_MutualTLS_STRICT; portStrict != strict {
			portsOut = append(portsOut, port)
		}
	}
	slices.Sort(portsOut) // map order is random; keep the output stable

	m := &security.Match{}
	switch {
	case strict:
		m.NotDestinationPorts = portsOut
	case len(portsOut) > 0:
		m.DestinationPorts = portsOut
	default:
		report.Skipped = "plaintext is allowed on every port, nothing to deny"
		return nil, report, false
	}
	return denyPlaintext(PeerAuthenticationPrefix+name, namespace, m), report, true
}

// hasSelector reports whether a PeerAuthentication is workload-level. As
// in Istio, a selector without labels is no selector: the resource sets
// its namespace's (or the mesh's) mode.
func hasSelector(spec *securityv1beta1.PeerAuthentication) bool {
	return len(spec.GetSelector().GetMatchLabels()) > 0
}
