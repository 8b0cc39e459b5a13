// Package ca is istiod's certificate authority. It owns the mesh signing key
// and roots (self-signed, or loaded from Istio's istio-ca-secret or a
// user-supplied cacerts secret), issues workload certificates whose only
// identity is a SPIFFE URI SAN, and serves Istio's
// istio.v1.auth.IstioCertificateService/CreateCertificate gRPC method. It
// decides who may have which identity: callers authenticate with a
// Kubernetes service account token (checked by TokenReview), get their own
// identity, and only the trusted node account may ask for the identity of a
// service account that has a pod on its node.
package ca
