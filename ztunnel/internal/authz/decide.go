package authz

import "github.com/ambient-mesh/mesh/pkg/workloadapi/security"

// Decision is the outcome for one connection, with the reason ztunnel logs
// and counts.
type Decision struct {
	Allow bool
	// Policy is the deciding policy (namespace/name), empty when none did.
	Policy string
	Reason string
	// DryRun is what the decision would be if the dry-run policies that
	// apply were enforced too; nil when none applies. It never changes
	// Allow.
	DryRun *Decision
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

// Decide evaluates the policies that apply to the destination workload:
// DENY first, then, if any ALLOW policy exists, ALLOW. Dry-run policies
// take no part in it; when any applies, Decision.DryRun tells what
// enforcing them as well would decide.
func Decide(policies []*Policy, c Conn) Decision {
	d := decide(policies, c, false)
	for _, p := range policies {
		if p.DryRun {
			all := decide(policies, c, true)
			d.DryRun = &all
			break
		}
	}
	return d
}

func decide(policies []*Policy, c Conn, withDryRun bool) Decision {
	allows := 0
	for _, p := range policies {
		if p.DryRun && !withDryRun {
			continue
		}
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
		if p.DryRun && !withDryRun {
			continue
		}
		if !p.Deny && p.Matches(c) {
			return Decision{Allow: true, Policy: p.Key(), Reason: "allowed by policy"}
		}
	}
	return Decision{Allow: false, Reason: "no allow policy matched"}
}
