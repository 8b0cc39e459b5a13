// Package controlplane is a small, real control plane for the ztunnel netns
// tests and benchmark: it speaks the same wire protocols as istiod so that
// ztunnel's own client code is exercised, not a test double of it.
//
// One gRPC server over TLS serves
//   - Delta ADS (DeltaAggregatedResources) for istio.workload.Address and
//     istio.security.Authorization, wildcard subscriptions only, recording
//     every ACK and NACK so tests can wait for config to land or assert a
//     rejection;
//   - the Istio CA (IstioCertificateService/CreateCertificate), signing
//     SPIFFE leaf certificates from an in-memory root, with knobs to shorten
//     their lifetime and to make the CA fail.
//
// A Server keeps its state across Stop and Start so tests can make "istiod"
// disappear and come back on the same socket.
package controlplane
