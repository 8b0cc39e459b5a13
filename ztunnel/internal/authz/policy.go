package authz

import (
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// Conn is what authorization sees of a connection.
type Conn struct {
	// Source is the peer's verified identity; zero for plaintext.
	Source spiffe.Identity
	Src    netip.AddrPort
	Dst    netip.AddrPort
}

// Policy is a compiled Authorization.
type Policy struct {
	Name      string
	Namespace string
	Scope     security.Scope
	Deny      bool
	// DryRun policies are evaluated for the log only; see Decide.
	DryRun bool
	// Unknown names the parts of the resource that carry fields this
	// ztunnel does not know, as a newer istiod may send ("authorization",
	// "groups[0]"). Compile fails closed on them: an ALLOW policy's group
	// holding one matches nothing (the whole policy, for a field of the
	// Authorization itself), so it allows less than asked; a DENY policy
	// is kept without them, so it denies at least what was asked.
	Unknown []string
	groups  [][][]match
}

// Key names the policy as workloads and logs refer to it: namespace/name.
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }

type match struct {
	namespaces, notNamespaces           []stringMatch
	serviceAccounts, notServiceAccounts []saMatch
	principals, notPrincipals           []stringMatch
	srcIPs, notSrcIPs                   []netip.Prefix
	dstIPs, notDstIPs                   []netip.Prefix
	dstPorts, notDstPorts               []uint16
}

func (m *match) empty() bool {
	return len(m.namespaces)+len(m.notNamespaces)+len(m.serviceAccounts)+len(m.notServiceAccounts)+
		len(m.principals)+len(m.notPrincipals)+len(m.srcIPs)+len(m.notSrcIPs)+
		len(m.dstIPs)+len(m.notDstIPs)+len(m.dstPorts)+len(m.notDstPorts) == 0
}

type stringMatch struct {
	kind  int // exact, prefix, suffix, presence
	value string
}

const (
	exact = iota
	prefix
	suffix
	presence
	// anything and nothing stand for an entry of a kind this ztunnel does
	// not know (a newer istiod's), chosen so that the policy fails closed.
	anything
	nothing
)

func (s stringMatch) matches(v string) bool {
	switch s.kind {
	case exact:
		return v == s.value
	case prefix:
		return strings.HasPrefix(v, s.value)
	case suffix:
		return strings.HasSuffix(v, s.value)
	case anything:
		return true
	case nothing:
		return false
	default:
		return v != ""
	}
}

type saMatch struct{ namespace, name string }

// Compile checks and compiles an Authorization. An error names the field;
// the caller rejects (NACKs) the resource and keeps the last good version.
func Compile(a *security.Authorization) (*Policy, error) {
	if a.GetName() == "" || a.GetNamespace() == "" {
		return nil, fmt.Errorf("authorization %s/%s: name and namespace are required", a.GetNamespace(), a.GetName())
	}
	p := &Policy{Name: a.GetName(), Namespace: a.GetNamespace(), Scope: a.GetScope(), DryRun: a.GetDryRun()}
	switch a.GetAction() {
	case security.Action_ALLOW:
	case security.Action_DENY:
		p.Deny = true
	default:
		return nil, fmt.Errorf("authorization %s: unknown action %d", p.Key(), a.GetAction())
	}
	if _, ok := security.Scope_name[int32(a.GetScope())]; !ok {
		return nil, fmt.Errorf("authorization %s: unknown scope %d", p.Key(), a.GetScope())
	}
	if len(a.ProtoReflect().GetUnknown()) > 0 {
		p.Unknown = append(p.Unknown, "authorization")
		if !p.Deny {
			return p, nil // an ALLOW that matches nothing
		}
	}
	for gi, g := range a.GetGroups() {
		if hasUnknown(g.ProtoReflect()) {
			p.Unknown = append(p.Unknown, fmt.Sprintf("groups[%d]", gi))
			if !p.Deny {
				continue
			}
		}
		var rules [][]match
		for ri, r := range g.GetRules() {
			var ms []match
			unconstrained := false
			for mi, m := range r.GetMatches() {
				cm, err := compileMatch(m, p.Deny)
				if err != nil {
					return nil, fmt.Errorf("authorization %s: groups[%d].rules[%d].matches[%d]: %w", p.Key(), gi, ri, mi, err)
				}
				unconstrained = unconstrained || cm.empty()
				ms = append(ms, cm)
			}
			if p.Deny && unconstrained {
				// An empty match is an alternative with no constraint
				// left, as Istio's istiod sends a DENY rule whose
				// conditions were all L7: in a DENY it holds for every
				// connection (fail closed). In an ALLOW it matches
				// nothing (see groupMatches), also failing closed.
				ms = nil
			}
			rules = append(rules, ms)
		}
		p.groups = append(p.groups, rules)
	}
	return p, nil
}

// hasUnknown reports whether m, or any message within it, carries fields
// its schema does not name.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil || fd.IsMap():
		case fd.IsList():
			for i := 0; i < v.List().Len() && !found; i++ {
				found = hasUnknown(v.List().Get(i).Message())
			}
		default:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

// compileMatch compiles one match of a DENY policy (deny) or an ALLOW
// policy.
func compileMatch(m *security.Match, deny bool) (match, error) {
	var out match
	var err error
	strs := func(field string, in []*security.StringMatch) []stringMatch {
		// An entry of an unknown kind must widen a DENY and narrow an
		// ALLOW: in a positive list it holds for every value in a DENY
		// and for none in an ALLOW; in a not_ list the other way round.
		unknownKind := nothing
		if deny != strings.HasPrefix(field, "not_") {
			unknownKind = anything
		}
		var res []stringMatch
		for i, s := range in {
			switch t := s.GetMatchType().(type) {
			case *security.StringMatch_Exact:
				res = append(res, stringMatch{exact, t.Exact})
			case *security.StringMatch_Prefix:
				res = append(res, stringMatch{prefix, t.Prefix})
			case *security.StringMatch_Suffix:
				res = append(res, stringMatch{suffix, t.Suffix})
			case *security.StringMatch_Presence:
				res = append(res, stringMatch{kind: presence})
			default:
				if len(s.ProtoReflect().GetUnknown()) > 0 {
					// A newer istiod's kind of match (Compile has noted
					// the unknown field).
					res = append(res, stringMatch{kind: unknownKind})
					continue
				}
				if err == nil {
					err = fmt.Errorf("%s[%d]: no match type", field, i)
				}
			}
		}
		return res
	}
	sas := func(in []*security.ServiceAccountMatch) []saMatch {
		var res []saMatch
		for _, s := range in {
			res = append(res, saMatch{s.GetNamespace(), s.GetServiceAccount()})
		}
		return res
	}
	prefixes := func(field string, in []*security.Address) []netip.Prefix {
		var res []netip.Prefix
		for i, a := range in {
			addr, ok := netip.AddrFromSlice(a.GetAddress())
			if !ok || int(a.GetLength()) > addr.BitLen() {
				if err == nil {
					err = fmt.Errorf("%s[%d]: bad address %x/%d", field, i, a.GetAddress(), a.GetLength())
				}
				continue
			}
			res = append(res, netip.PrefixFrom(addr, int(a.GetLength())).Masked())
		}
		return res
	}
	ports := func(field string, in []uint32) []uint16 {
		var res []uint16
		for i, p := range in {
			if p > 65535 {
				if err == nil {
					err = fmt.Errorf("%s[%d]: port %d out of range", field, i, p)
				}
				continue
			}
			res = append(res, uint16(p))
		}
		return res
	}
	out.namespaces = strs("namespaces", m.GetNamespaces())
	out.notNamespaces = strs("not_namespaces", m.GetNotNamespaces())
	out.serviceAccounts = sas(m.GetServiceAccounts())
	out.notServiceAccounts = sas(m.GetNotServiceAccounts())
	out.principals = strs("principals", m.GetPrincipals())
	out.notPrincipals = strs("not_principals", m.GetNotPrincipals())
	out.srcIPs = prefixes("source_ips", m.GetSourceIps())
	out.notSrcIPs = prefixes("not_source_ips", m.GetNotSourceIps())
	out.dstIPs = prefixes("destination_ips", m.GetDestinationIps())
	out.notDstIPs = prefixes("not_destination_ips", m.GetNotDestinationIps())
	out.dstPorts = ports("destination_ports", m.GetDestinationPorts())
	out.notDstPorts = ports("not_destination_ports", m.GetNotDestinationPorts())
	return out, err
}

// Matches reports whether the policy's rules select the connection.
func (p *Policy) Matches(c Conn) bool {
	for _, group := range p.groups {
		if groupMatches(group, c) {
			return true
		}
	}
	return false
}

func groupMatches(rules [][]match, c Conn) bool {
	for _, rule := range rules {
		if len(rule) == 0 {
			continue // an empty rule constrains nothing
		}
		ok := false
		for i := range rule {
			if !rule[i].empty() && rule[i].matches(c) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (m *match) matches(c Conn) bool {
	// Principals are written without the spiffe:// scheme; plaintext
	// peers have no principal and no namespace.
	principal, ns := "", ""
	if !c.Source.IsZero() {
		principal = strings.TrimPrefix(c.Source.String(), spiffe.Scheme)
		ns = c.Source.Namespace
	}
	return both(m.namespaces, m.notNamespaces, func(s stringMatch) bool { return s.matches(ns) }) &&
		both(m.serviceAccounts, m.notServiceAccounts, func(s saMatch) bool {
			return !c.Source.IsZero() && s.namespace == c.Source.Namespace && s.name == c.Source.ServiceAccount
		}) &&
		both(m.principals, m.notPrincipals, func(s stringMatch) bool { return principal != "" && s.matches(principal) }) &&
		both(m.srcIPs, m.notSrcIPs, func(p netip.Prefix) bool { return p.Contains(c.Src.Addr().Unmap()) }) &&
		both(m.dstIPs, m.notDstIPs, func(p netip.Prefix) bool { return p.Contains(c.Dst.Addr().Unmap()) }) &&
		both(m.dstPorts, m.notDstPorts, func(p uint16) bool { return p == c.Dst.Port() })
}

// both is one field of a match: some positive entry must hold if there are
// any, and no negative entry may.
func both[T any](pos, neg []T, holds func(T) bool) bool {
	if len(pos) > 0 {
		found := false
		for _, v := range pos {
			if holds(v) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for _, v := range neg {
		if holds(v) {
			return false
		}
	}
	return true
}
