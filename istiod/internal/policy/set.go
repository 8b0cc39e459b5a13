package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// Kind names the kind of a security resource in a Ref.
type Kind string

// The kinds Build reads.
const (
	KindAuthorizationPolicy Kind = "AuthorizationPolicy"
	KindPeerAuthentication  Kind = "PeerAuthentication"
)

// Ref names one input resource.
type Ref struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (r Ref) String() string { return string(r.Kind) + " " + r.Namespace + "/" + r.Name }

// AuthorizationPolicy is one AuthorizationPolicy as read from Kubernetes.
type AuthorizationPolicy struct {
	Name        string
	Namespace   string
	Annotations map[string]string
	Spec        *securityv1beta1.AuthorizationPolicy
}

// PeerAuthentication is one PeerAuthentication as read from Kubernetes.
// Created orders resources that compete for the same workloads: as in
// Istio, the oldest wins.
type PeerAuthentication struct {
	Name      string
	Namespace string
	Created   time.Time
	Spec      *securityv1beta1.PeerAuthentication
}

// Set is the translation of every security resource of the cluster: the
// Authorization resources to serve, a report for each input, and which of
// the resources each workload must list in Workload.authorization_policies
// (ztunnel applies GLOBAL and NAMESPACE scoped policies by themselves, and
// WORKLOAD_SELECTOR scoped ones only where a workload lists them).
type Set struct {
	// Resources are the Authorizations to serve, by resource name
	// (namespace/name).
	Resources map[string]*security.Authorization
	// Reports holds what each input's translation did not carry over.
	Reports map[Ref]Report

	root string
	// selectors are the WORKLOAD_SELECTOR AuthorizationPolicies by
	// namespace; the root namespace's apply in every namespace.
	selectors map[string][]selected
	// peerAuth are the workload-level PeerAuthentications by namespace,
	// oldest first.
	peerAuth map[string][]selected
	// strictNS holds the namespaces whose own mode is STRICT, and
	// permissiveNS those whose own mode is not (so the mesh mode does not
	// apply). A namespace in neither inherits meshStrict.
	strictNS, permissiveNS map[string]bool
	meshStrict             bool
}

// selected is a resource that applies to the workloads its labels select,
// under the resource name it is attached by (empty: attach nothing).
type selected struct {
	labels   map[string]string
	resource string
}

// ResourceName is the delta xDS name of an Authorization: namespace/name,
// which is also how a Workload lists it.
func ResourceName(a *security.Authorization) string { return a.GetNamespace() + "/" + a.GetName() }

// Build translates the cluster's AuthorizationPolicies and
// PeerAuthentications with rootNS as the mesh's root namespace
// (DefaultRootNamespace when empty).
//
// PeerAuthentication precedence is Istio's: a workload-level resource (the
// oldest one selecting the workload) over the namespace's (the oldest one
// without a selector) over the mesh's (the oldest one without a selector in
// the root namespace); UNSET modes inherit from the next level up.
func Build(rootNS string, aps []AuthorizationPolicy, pas []PeerAuthentication) *Set {
	if rootNS == "" {
		rootNS = DefaultRootNamespace
	}
	s := &Set{
		Resources:    map[string]*security.Authorization{},
		Reports:      map[Ref]Report{},
		root:         rootNS,
		selectors:    map[string][]selected{},
		peerAuth:     map[string][]selected{},
		strictNS:     map[string]bool{},
		permissiveNS: map[string]bool{},
	}
	aps = slices.Clone(aps)
	slices.SortFunc(aps, func(a, b AuthorizationPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	for _, ap := range aps {
		a, report, ok := TranslateAuthorizationPolicy(Input{Name: ap.Name, Namespace: ap.Namespace, RootNamespace: rootNS, Annotations: ap.Annotations, Spec: ap.Spec})
		s.Reports[Ref{KindAuthorizationPolicy, ap.Namespace, ap.Name}] = report
		if !ok {
			continue
		}
		name := ResourceName(a)
		s.Resources[name] = a
		if a.GetScope() == security.Scope_WORKLOAD_SELECTOR {
			s.selectors[ap.Namespace] = append(s.selectors[ap.Namespace], selected{report.Selector, name})
		}
	}

	pas = slices.Clone(pas)
	slices.SortFunc(pas, func(a, b PeerAuthentication) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	// First the namespace and mesh modes, which workload-level resources
	// inherit; the oldest resource without a selector sets them.
	nsMode := map[string]securityv1beta1.PeerAuthentication_MutualTLS_Mode{}
	for _, pa := range pas {
		if hasSelector(pa.Spec) {
			continue
		}
		ref := Ref{KindPeerAuthentication, pa.Namespace, pa.Name}
		var report Report
		if _, seen := nsMode[pa.Namespace]; seen {
			report.ignore("metadata.creationTimestamp", "an older PeerAuthentication without a selector already sets this namespace's mode")
		} else {
			nsMode[pa.Namespace] = pa.Spec.GetMtls().GetMode()
		}
		if len(pa.Spec.GetPortLevelMtls()) > 0 {
			report.ignore("portLevelMtls", "port-level mTLS needs a selector")
		}
		s.Reports[ref] = report
	}
	mesh := nsMode[rootNS]
	s.meshStrict = mesh == securityv1beta1.PeerAuthentication_MutualTLS_STRICT
	for ns, m := range nsMode {
		switch m {
		case securityv1beta1.PeerAuthentication_MutualTLS_UNSET:
		case securityv1beta1.PeerAuthentication_MutualTLS_STRICT:
			s.strictNS[ns] = true
		default:
			s.permissiveNS[ns] = true
		}
	}
	anyStrict := s.meshStrict || len(s.strictNS) > 0
	for _, pa := range pas {
		if !hasSelector(pa.Spec) {
			continue
		}
		if pa.Namespace == rootNS {
			// Istio applies only the mesh-wide resource from the root
			// namespace; a selector there selects nothing.
			s.Reports[Ref{KindPeerAuthentication, pa.Namespace, pa.Name}] = Report{Ignored: []Issue{{
				Path: "selector", Reason: "a PeerAuthentication with a selector in the root namespace applies to no workload",
			}}}
			continue
		}
		inherited := mesh
		if m := nsMode[pa.Namespace]; m != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			inherited = m
		}
		a, report, ok := TranslatePeerAuthentication(pa.Name, pa.Namespace, pa.Spec, inherited)
		s.Reports[Ref{KindPeerAuthentication, pa.Namespace, pa.Name}] = report
		sel := selected{labels: report.Selector}
		if ok {
			sel.resource = ResourceName(a)
			s.Resources[sel.resource] = a
			anyStrict = true
		}
		// Kept even without a resource: selecting a workload still shields
		// it from an inherited STRICT mode.
		s.peerAuth[pa.Namespace] = append(s.peerAuth[pa.Namespace], sel)
	}
	if anyStrict {
		a := StaticStrict(rootNS)
		s.Resources[ResourceName(a)] = a
	}
	return s
}

// Attached returns the names of the Authorizations a workload in namespace
// with labels must list, sorted.
func (s *Set) Attached(namespace string, labels map[string]string) []string {
	var out []string
	add := func(sels []selected) {
		for _, sel := range sels {
			if sel.resource != "" && subset(sel.labels, labels) {
				out = append(out, sel.resource)
			}
		}
	}
	add(s.selectors[namespace])
	if namespace != s.root {
		add(s.selectors[s.root])
	}
	if sel, ok := s.workloadPeerAuth(namespace, labels); ok {
		if sel.resource != "" {
			out = append(out, sel.resource)
		}
	} else if s.strictNS[namespace] || (s.meshStrict && !s.permissiveNS[namespace]) {
		out = append(out, s.root+"/"+StaticStrictPolicyName)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (s *Set) workloadPeerAuth(namespace string, labels map[string]string) (selected, bool) {
	for _, sel := range s.peerAuth[namespace] {
		if subset(sel.labels, labels) {
			return sel, true
		}
	}
	return selected{}, false
}

func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// Changed reports which namespaces' workloads may list other resources
// under next than under prev: all of them (all is true), or the ones
// named. A nil prev is a change everywhere.
func Changed(prev, next *Set) (all bool, namespaces []string) {
	if prev == nil || prev.root != next.root || prev.meshStrict != next.meshStrict ||
		!equalSelected(prev.selectors[prev.root], next.selectors[next.root]) {
		return true, nil
	}
	seen := map[string]bool{}
	for _, s := range []*Set{prev, next} {
		for _, m := range []map[string][]selected{s.selectors, s.peerAuth} {
			for ns := range m {
				seen[ns] = true
			}
		}
		for _, m := range []map[string]bool{s.strictNS, s.permissiveNS} {
			for ns := range m {
				seen[ns] = true
			}
		}
	}
	for ns := range seen {
		if !equalSelected(prev.selectors[ns], next.selectors[ns]) || !equalSelected(prev.peerAuth[ns], next.peerAuth[ns]) ||
			prev.strictNS[ns] != next.strictNS[ns] || prev.permissiveNS[ns] != next.permissiveNS[ns] {
			namespaces = append(namespaces, ns)
		}
	}
	slices.Sort(namespaces)
	return false, namespaces
}

func equalSelected(a, b []selected) bool {
	return slices.EqualFunc(a, b, func(x, y selected) bool {
		return x.resource == y.resource && maps.Equal(x.labels, y.labels)
	})
}

// Summary is a report's one-line description, for logs and status
// messages; empty when the translation carried everything over.
func (r Report) Summary() string {
	var parts []string
	if r.Skipped != "" {
		parts = append(parts, "not applied by ztunnel: "+r.Skipped)
	}
	for _, i := range r.Invalid {
		parts = append(parts, "invalid "+i.String())
	}
	for _, i := range r.Ignored {
		parts = append(parts, "not enforced "+i.String())
	}
	return strings.Join(parts, "; ")
}

// String describes the Set for logs.
func (s *Set) String() string {
	return fmt.Sprintf("%d authorizations from %d resources (root namespace %s)", len(s.Resources), len(s.Reports), s.root)
}
