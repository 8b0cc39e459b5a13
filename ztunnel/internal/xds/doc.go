// Package xds is ztunnel's workload discovery client: one Delta ADS stream
// to istiod subscribing to every istio.workload.Address and
// istio.security.Authorization, merged into the state store. Each response
// is ACKed, or NACKed with the rejected resources named while the valid
// ones are applied. When the stream breaks the client reconnects with
// backoff, resuming from the versions it holds, and the store keeps serving
// its last good state meanwhile.
package xds
