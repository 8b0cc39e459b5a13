// Package zdsapi holds the ZDS messages exchanged between the node agent and
// ztunnel: the .proto source and the Go generated from it, matching Istio's
// schema field for field. The transport and its rules live in package zds.
package zdsapi

//go:generate bash ../../tools/proto/protoc.sh zds.proto
