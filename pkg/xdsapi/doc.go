// Package xdsapi holds the Delta xDS messages a node proxy exchanges with
// istiod, wire-compatible with Envoy's (envoy.service.discovery.v3). It
// spares ztunnel the Envoy API packages, whose thousands of descriptors
// would cost memory in every node proxy. The stream itself is opened with
// pkg/rpc (ztunnel) or xdsgrpc (programs that link grpc-go).
package xdsapi

//go:generate bash ../../tools/proto/protoc.sh discovery.proto

// DeltaADSMethod is the gRPC method of Envoy's aggregated discovery service
// for incremental (delta) xDS.
const DeltaADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
