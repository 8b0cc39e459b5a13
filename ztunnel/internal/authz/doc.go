// Package authz decides, with Istio's semantics, whether ztunnel lets a
// connection into a workload: the L4 AuthorizationPolicies istiod sends as
// istio.security.Authorization resources, compiled once and evaluated per
// connection.
//
// A policy applies to a workload when its scope is GLOBAL, when it is
// NAMESPACE-scoped to the workload's namespace, or when the workload names
// it. DENY policies are checked first: any match denies. Then, if no ALLOW
// policy applies the connection is allowed; otherwise one must match.
//
// Inside a policy: any group may match (OR); within a group every rule must
// (AND); within a rule any match may (OR); within a match every non-empty
// field must hold, a positive list by one of its entries, a negative list by
// none. A policy with no groups matches nothing, and so does a match with no
// fields: an empty ALLOW allows nothing, an empty DENY denies nothing.
package authz
