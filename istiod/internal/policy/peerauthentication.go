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

// TranslatePeerAuthentication turns a PeerAuthentication into the DENY
// policy that makes ztunnel refuse plaintext: a connection without a peer
// principal matches not_principals: [presence]. PERMISSIVE, DISABLE and
// UNSET need no policy (ok is false).
//
// portLevelMtls is honoured only with a selector, as Istio requires:
//   - mode STRICT with ports P.. PERMISSIVE or DISABLE: deny plaintext on
//     every port except P.. (not_destination_ports);
//   - any other mode with ports P.. STRICT: deny plaintext on P.. only
//     (destination_ports).
//
// All exceptions go into one Match. Istio once put each STRICT port in its
// own Rules of one Group; Rules are ANDed, so with two STRICT ports the
// policy required the destination port to equal both and never denied.
//
// The result is independent of other PeerAuthentications: a DENY cannot
// be relaxed by a more specific PERMISSIVE one, so the caller must not
// serve a mesh or namespace STRICT policy to workloads that a narrower
// PeerAuthentication makes PERMISSIVE (Istio attaches its static strict
// policy per workload for this reason).
func TranslatePeerAuthentication(name, namespace, rootNS string, spec *securityv1beta1.PeerAuthentication) (*security.Authorization, Report, bool) {
	var report Report
	if spec == nil {
		report.Skipped = "no spec"
		return nil, report, false
	}
	selector := spec.GetSelector() != nil
	scope := scopeOf(namespace, rootNS, selector)
	if selector {
		report.Selector = copyLabels(spec.GetSelector().GetMatchLabels())
	}
	mode := spec.GetMtls().GetMode()
	strict := mode == securityv1beta1.PeerAuthentication_MutualTLS_STRICT

	var portsOut []uint32 // strict ports, or exempt ports when strict
	if len(spec.GetPortLevelMtls()) > 0 && !selector {
		report.ignore("portLevelMtls", "port-level mTLS needs a selector")
	} else {
		for port, m := range spec.GetPortLevelMtls() {
			pm := m.GetMode()
			if pm == securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
				continue // inherits the workload mode
			}
			if port == 0 || port > 65535 {
				// Ignoring a bad exemption is stricter; a bad STRICT port
				// can never be a connection's destination anyway.
				report.invalid(fmt.Sprintf("portLevelMtls[%d]", port), "port out of range 1..65535")
				continue
			}
			portStrict := pm == securityv1beta1.PeerAuthentication_MutualTLS_STRICT
			if !portStrict && mode == securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
				// A DENY from a STRICT parent cannot be relaxed here.
				report.ignore(fmt.Sprintf("portLevelMtls[%d]", port), "exempting a port from an inherited STRICT mode needs the parent's policy")
			}
			if portStrict != strict {
				portsOut = append(portsOut, port)
			}
		}
	}
	slices.Sort(portsOut) // map order is random; keep the output stable

	noPrincipal := []*security.StringMatch{{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}}
	m := &security.Match{NotPrincipals: noPrincipal}
	switch {
	case strict:
		m.NotDestinationPorts = portsOut
	case len(portsOut) > 0:
		m.DestinationPorts = portsOut
		if mode == securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			report.ignore("mtls.mode", "UNSET inherits a mode this translation cannot see; only the STRICT ports are enforced")
		}
	default:
		report.Skipped = fmt.Sprintf("mode %s: plaintext is allowed, nothing to deny", mode)
		return nil, report, false
	}

	polName := PeerAuthenticationPrefix + name
	if scope == security.Scope_GLOBAL {
		polName = StaticStrictPolicyName
	}
	return &security.Authorization{
		Name:      polName,
		Namespace: namespace,
		Scope:     scope,
		Action:    security.Action_DENY,
		Groups:    []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{m}}}}},
	}, report, true
}
