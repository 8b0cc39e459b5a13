// Package spiffe holds mesh identities: SPIFFE IDs of the form
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, how they are
// read from X.509 certificates, and how a peer's certificate chain is
// verified against the mesh roots and an allowed set of identities.
package spiffe
