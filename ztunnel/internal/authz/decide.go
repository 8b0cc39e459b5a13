package authz

import "github.com/ambient-mesh/mesh/pkg/workloadapi/security"

// Decision is the outcome for one connection, with the reason ztunnel logs
// and counts.
type Decision struct {
	Allow bool
	// Policy is the deciding policy (namespace/name), empty when none did.
	Policy string
	Reason string
}

// Applies reports whether p governs a workload in namespace ns that names
// the policies in selected (namespace/name keys).
func (p *Policy) Applies(ns string, selected []string) bool {
	switch p.Scope {
	case security.Scope_GLOBAL:
		return true
	case security.Scope_NAMESPACE:
		return p.Namespace == ns
	default:
		key := p.Key()
		for _, s := range selected {
			if s == key {
				return true
			}
		}
		return false
	}
}

// Decide evaluates the policies that apply to the destination workload.
func Decide(policies []*Policy, c Conn) Decision {
	allows := 0
	for _, p := range policies {
		if !p.Deny {
			allows++
			continue
		}
		if p.Matches(c) {
			return Decision{Allow: false, Policy: p.Key(), Reason: "denied by policy"}
		}
	}
	if allows == 0 {
		return Decision{Allow: true, Reason: "no allow policy"}
	}
	for _, p := range policies {
		if !p.Deny && p.Matches(c) {
			return Decision{Allow: true, Policy: p.Key(), Reason: "allowed by policy"}
		}
	}
	return Decision{Allow: false, Reason: "no allow policy matched"}
}
