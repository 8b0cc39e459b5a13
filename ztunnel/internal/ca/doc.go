// Package ca gets ztunnel the certificates of the workloads on its node from
// the mesh CA (istio.v1.auth.IstioCertificateService/CreateCertificate), and
// keeps them fresh.
//
// ztunnel authenticates with its own projected ServiceAccount token and
// asks for each workload's identity by impersonation. Private keys are made
// here and never leave memory. A certificate is fetched when the first
// workload of an identity needs it, renewed at half of its lifetime with
// backoff on failure, and the old one is served until the new one arrives or
// it expires.
package ca
