// Package xdsapi holds the Delta xDS messages a node proxy exchanges with
// istiod, wire-compatible with Envoy's (envoy.service.discovery.v3), and the
// client side of the DeltaAggregatedResources stream. It spares ztunnel the
// Envoy API packages, whose thousands of descriptors would cost memory in
// every node proxy.
package xdsapi

//go:generate bash ../../tools/proto/protoc.sh discovery.proto
