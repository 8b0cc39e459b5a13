package policy

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// Input is one AuthorizationPolicy as the caller read it from Kubernetes.
type Input struct {
	// Name and Namespace are the resource's metadata.
	Name      string
	Namespace string
	// RootNamespace is the mesh's root namespace; DefaultRootNamespace
	// when empty.
	RootNamespace string
	// Annotations are the resource's; istio.io/dry-run is read from them.
	Annotations map[string]string
	Spec        *securityv1beta1.AuthorizationPolicy
}

// DryRunAnnotation marks an AuthorizationPolicy that is evaluated and
// logged but not enforced: "true" or "false", as strconv.ParseBool reads.
const DryRunAnnotation = "istio.io/dry-run"

// TranslateAuthorizationPolicy reduces an AuthorizationPolicy to what
// ztunnel enforces. ok is false when the policy is not for ztunnel at all
// (targetRefs, which a waypoint enforces; AUDIT and CUSTOM, which ztunnel
// does not implement); report.Skipped then says why.
//
// Scope: GLOBAL in the root namespace without a selector, NAMESPACE
// elsewhere without one, WORKLOAD_SELECTOR with one (report.Selector holds
// its labels).
//
// Rules: Istio ORs rules, ANDs from/to/when within a rule, ORs the entries
// of from and of to, and ANDs the fields of one source or operation.
// ztunnel's Authorization ORs groups, ANDs the Rules of a group, ORs the
// Matches of a Rules and ANDs the fields of a Match. So:
//
//	rule                → one Group
//	rule.from           → one Rules, one Match per source
//	rule.to             → one Rules, one Match per operation
//	rule.when[k]        → one Rules with a single Match
//	source.principals   → principals        (and not_ variants likewise)
//	source.namespaces   → namespaces
//	source.serviceAccounts → service_accounts ("sa" means the policy's namespace)
//	source.ipBlocks     → source_ips
//	operation.ports     → destination_ports
//	when source.ip / source.namespace / source.principal /
//	     destination.ip / destination.port → the matching field
//
// A rule without from, to or when becomes a Group without Rules, which
// matches every connection: that is Istio's allow-all (rules: [{}]) and
// deny-all. A policy without rules has no groups and matches nothing:
// Istio's allow-nothing (spec: {}).
func TranslateAuthorizationPolicy(in Input) (out *security.Authorization, report Report, ok bool) {
	spec := in.Spec
	if spec == nil {
		report.Skipped = "no spec"
		return nil, report, false
	}
	if spec.GetTargetRef() != nil || len(spec.GetTargetRefs()) > 0 {
		report.Skipped = "targetRef: the policy is enforced by a waypoint, not ztunnel"
		return nil, report, false
	}
	var action security.Action
	switch spec.GetAction() {
	case securityv1beta1.AuthorizationPolicy_ALLOW:
		action = security.Action_ALLOW
	case securityv1beta1.AuthorizationPolicy_DENY:
		action = security.Action_DENY
	case securityv1beta1.AuthorizationPolicy_AUDIT:
		report.Skipped = "action AUDIT: ztunnel does not audit; a waypoint can"
		return nil, report, false
	case securityv1beta1.AuthorizationPolicy_CUSTOM:
		report.Skipped = "action CUSTOM: ztunnel does not call external authorizers; a waypoint can"
		return nil, report, false
	default:
		report.Skipped = fmt.Sprintf("unknown action %d", spec.GetAction())
		return nil, report, false
	}

	out = &security.Authorization{
		Name:      in.Name,
		Namespace: in.Namespace,
		Scope:     scopeOf(in.Namespace, in.RootNamespace, spec.GetSelector() != nil),
		Action:    action,
	}
	if v, set := in.Annotations[DryRunAnnotation]; set {
		dry, err := strconv.ParseBool(v)
		if err != nil {
			// Enforcing is the safe reading of a value nobody can read.
			report.invalid("metadata.annotations["+DryRunAnnotation+"]", "%q is not true or false: the policy is enforced", v)
		}
		out.DryRun, report.DryRun = dry, dry
	}
	if out.Scope == security.Scope_WORKLOAD_SELECTOR {
		report.Selector = copyLabels(spec.GetSelector().GetMatchLabels())
	}
	t := translator{report: &report, deny: action == security.Action_DENY, namespace: in.Namespace}
	for i, r := range spec.GetRules() {
		if g, keep := t.rule(fmt.Sprintf("rules[%d]", i), r); keep {
			out.Groups = append(out.Groups, g)
		}
	}
	return out, report, true
}

func scopeOf(namespace, root string, selector bool) security.Scope {
	if root == "" {
		root = DefaultRootNamespace
	}
	switch {
	case selector:
		return security.Scope_WORKLOAD_SELECTOR
	case namespace == root:
		return security.Scope_GLOBAL
	default:
		return security.Scope_NAMESPACE
	}
}

type translator struct {
	report    *Report
	deny      bool
	namespace string
}

// rule translates one Istio rule. A rule with a field that cannot be
// enforced (L7 or unparseable) is dropped from an ALLOW policy, so it
// allows nothing, and kept without that field in a DENY policy, so it
// denies at least what was asked.
func (t *translator) rule(path string, r *securityv1beta1.Rule) (*security.Group, bool) {
	failed := false
	var rules []*security.Rules

	var from []*security.Match
	for j, f := range r.GetFrom() {
		m, bad := t.source(fmt.Sprintf("%s.from[%d].source", path, j), f.GetSource())
		failed = failed || bad
		from = append(from, m)
	}
	if rs := alternatives(from); rs != nil {
		rules = append(rules, rs)
	}

	var to []*security.Match
	for j, o := range r.GetTo() {
		m, bad := t.operation(fmt.Sprintf("%s.to[%d].operation", path, j), o.GetOperation())
		failed = failed || bad
		to = append(to, m)
	}
	if rs := alternatives(to); rs != nil {
		rules = append(rules, rs)
	}

	for k, c := range r.GetWhen() {
		m, bad := t.condition(fmt.Sprintf("%s.when[%d]", path, k), c)
		failed = failed || bad
		if rs := alternatives([]*security.Match{m}); rs != nil {
			rules = append(rules, rs)
		}
	}

	if failed && !t.deny {
		return nil, false
	}
	return &security.Group{Rules: rules}, true
}

// alternatives ORs matches into one Rules. An empty Match stands for an
// alternative without constraints, so the whole OR holds for every
// connection and the Rules is left out (nil): ztunnel would read the empty
// Match as matching nothing.
func alternatives(ms []*security.Match) *security.Rules {
	if len(ms) == 0 {
		return nil
	}
	for _, m := range ms {
		if proto.Size(m) == 0 {
			return nil
		}
	}
	return &security.Rules{Matches: ms}
}

// source translates one from.source; bad reports a field that made it
// fail closed.
func (t *translator) source(path string, s *securityv1beta1.Source) (m *security.Match, bad bool) {
	l7 := func(field string, vs []string, why string) {
		if len(vs) > 0 {
			t.report.ignore(path+"."+field, "%s", why)
			bad = true
		}
	}
	l7("requestPrincipals", s.GetRequestPrincipals(), "request principals come from a JWT, which L4 cannot see")
	l7("notRequestPrincipals", s.GetNotRequestPrincipals(), "request principals come from a JWT, which L4 cannot see")
	// remote.ip comes from X-Forwarded-For or PROXY protocol; treating it
	// as the peer address would let a client behind a proxy slip past a DENY.
	l7("remoteIpBlocks", s.GetRemoteIpBlocks(), "the remote IP needs the HTTP request or PROXY protocol")
	l7("notRemoteIpBlocks", s.GetNotRemoteIpBlocks(), "the remote IP needs the HTTP request or PROXY protocol")
	l7("trustDomains", s.GetTrustDomains(), "ztunnel's Authorization has no trust domain match")
	l7("notTrustDomains", s.GetNotTrustDomains(), "ztunnel's Authorization has no trust domain match")

	m = &security.Match{
		Principals:    stringMatches(s.GetPrincipals()),
		NotPrincipals: stringMatches(s.GetNotPrincipals()),
		Namespaces:    stringMatches(s.GetNamespaces()),
		NotNamespaces: stringMatches(s.GetNotNamespaces()),
	}
	var ok [4]bool
	m.ServiceAccounts, ok[0] = t.serviceAccounts(path+".serviceAccounts", s.GetServiceAccounts())
	m.NotServiceAccounts, ok[1] = t.serviceAccounts(path+".notServiceAccounts", s.GetNotServiceAccounts())
	m.SourceIps, ok[2] = t.addresses(path+".ipBlocks", s.GetIpBlocks())
	m.NotSourceIps, ok[3] = t.addresses(path+".notIpBlocks", s.GetNotIpBlocks())
	return m, bad || !all(ok[:])
}

// operation translates one to.operation.
func (t *translator) operation(path string, o *securityv1beta1.Operation) (m *security.Match, bad bool) {
	l7 := func(field string, vs []string) {
		if len(vs) > 0 {
			t.report.ignore(path+"."+field, "needs the HTTP request, which L4 cannot see")
			bad = true
		}
	}
	l7("hosts", o.GetHosts())
	l7("notHosts", o.GetNotHosts())
	l7("methods", o.GetMethods())
	l7("notMethods", o.GetNotMethods())
	l7("paths", o.GetPaths())
	l7("notPaths", o.GetNotPaths())

	m = &security.Match{}
	var ok [2]bool
	m.DestinationPorts, ok[0] = t.ports(path+".ports", o.GetPorts())
	m.NotDestinationPorts, ok[1] = t.ports(path+".notPorts", o.GetNotPorts())
	return m, bad || !all(ok[:])
}

// condition translates one when condition; only the keys ztunnel can see
// on a connection are supported.
func (t *translator) condition(path string, c *securityv1beta1.Condition) (*security.Match, bool) {
	m := &security.Match{}
	vals, nots := c.GetValues(), c.GetNotValues()
	var ok1, ok2 bool
	switch c.GetKey() {
	case "source.ip":
		m.SourceIps, ok1 = t.addresses(path+".values", vals)
		m.NotSourceIps, ok2 = t.addresses(path+".notValues", nots)
	case "destination.ip":
		m.DestinationIps, ok1 = t.addresses(path+".values", vals)
		m.NotDestinationIps, ok2 = t.addresses(path+".notValues", nots)
	case "destination.port":
		m.DestinationPorts, ok1 = t.ports(path+".values", vals)
		m.NotDestinationPorts, ok2 = t.ports(path+".notValues", nots)
	case "source.namespace":
		m.Namespaces, m.NotNamespaces = stringMatches(vals), stringMatches(nots)
		ok1, ok2 = true, true
	case "source.principal":
		m.Principals, m.NotPrincipals = stringMatches(vals), stringMatches(nots)
		ok1, ok2 = true, true
	default:
		t.report.ignore(path, "condition key %q is not an L4 attribute", c.GetKey())
		return m, true
	}
	return m, !ok1 || !ok2
}

// parseAll parses every entry of a list. On a bad entry it reports it
// (want says what an entry must be) and returns no list, so the field is
// unconstrained (broader, for DENY) and the caller fails the rule (for
// ALLOW).
func parseAll[T any](t *translator, path, want string, vs []string, parse func(string) (T, bool)) ([]T, bool) {
	var out []T
	ok := true
	for i, v := range vs {
		x, good := parse(v)
		if !good {
			t.report.invalid(fmt.Sprintf("%s[%d]", path, i), "%q is not %s", v, want)
			ok = false
			continue
		}
		out = append(out, x)
	}
	if !ok {
		return nil, false
	}
	return out, true
}

// addresses parses a list of CIDRs or IPs.
func (t *translator) addresses(path string, vs []string) ([]*security.Address, bool) {
	return parseAll(t, path, "an IP address or CIDR", vs, parseAddress)
}

// ports parses a list of port numbers.
func (t *translator) ports(path string, vs []string) ([]uint32, bool) {
	return parseAll(t, path, "a port number", vs, parsePort)
}

// serviceAccounts parses "<namespace>/<serviceaccount>" or, in the
// policy's namespace, "<serviceaccount>".
func (t *translator) serviceAccounts(path string, vs []string) ([]*security.ServiceAccountMatch, bool) {
	return parseAll(t, path, "<namespace>/<serviceaccount> or <serviceaccount>", vs, func(v string) (*security.ServiceAccountMatch, bool) {
		return parseServiceAccount(v, t.namespace)
	})
}

func all(bs []bool) bool {
	for _, b := range bs {
		if !b {
			return false
		}
	}
	return true
}
