// Package policy translates Istio security resources (AuthorizationPolicy
// and PeerAuthentication) into the L4 istio.security.Authorization
// resources that istiod serves to ztunnel. The translation is pure: the
// caller passes resources in and gets an Authorization plus a Report back,
// which it uses to set status conditions and to match selectors to pods.
//
// ztunnel sees connections, not requests, so anything that needs HTTP or a
// proxy in the path (request principals, methods, paths, hosts, remote IPs,
// request.* conditions) cannot be enforced here. Such fields fail closed,
// as Istio does: an ALLOW rule that uses them is dropped, so it matches
// nothing; a DENY rule keeps its L4 part only, so it denies more. Values
// that do not parse (a port "http", an address "10.0.0.300") are handled
// the same way, because guessing what the author meant could open access.
//
// The output never holds an empty Match: ztunnel treats a Match without
// fields as matching nothing, while in Istio's API an empty source or
// operation matches everything. An unconstrained alternative is therefore
// expressed by leaving its Rules out altogether.
package policy
