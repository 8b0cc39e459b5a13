// Package ads owns the Delta Aggregated Discovery Service that istiod serves
// to node proxies (ztunnel) on
// envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources.
//
// It has two halves kept apart on purpose: a Cache, into which the rest of
// istiod writes named, versioned resources per type URL, and a Server, the
// gRPC transport that turns cache changes into per-connection deltas. Writers
// never wait for clients: a change only marks names dirty on each
// connection, and each connection's own goroutine reads the cache when it is
// free to send. A connection has at most one unacknowledged response per
// type; changes that arrive meanwhile merge into the next one, which is how
// bursts are coalesced and how a slow or stuck client is kept from growing
// an unbounded queue.
//
// For operations the Server describes its open streams (Connections, Held)
// and tells an optional Observer of every response sent and rejected, with
// how long the oldest change it carried waited: push latency as the client
// sees it.
package ads
