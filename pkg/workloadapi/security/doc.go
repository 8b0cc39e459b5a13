// Package security holds the L4 authorization policy API that istiod serves
// to ztunnel over Delta ADS (type URL
// type.googleapis.com/istio.security.Authorization): the .proto source and
// the Go generated from it, matching Istio's schema field for field.
package security

//go:generate bash ../../../tools/proto/protoc.sh authorization.proto
