// Package workloadapi holds the workload discovery API that istiod serves to
// ztunnel over Delta ADS (type URL type.googleapis.com/istio.workload.Address):
// the .proto source and the Go generated from it. The schema matches Istio's
// field for field, so either side can be swapped for Istio's.
package workloadapi

//go:generate bash ../../tools/proto/protoc.sh workload.proto
