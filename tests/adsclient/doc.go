// Package adsclient is a recording Delta ADS client for tests and
// benchmarks of a control plane. It subscribes to resource types the way a
// ztunnel does (wildcard, with a node id), ACKs every response, and keeps a
// record of what arrived and when: for each resource name the time it first
// and last arrived, and for each response its size as encoded on the stream.
//
// It is not a proxy's client: it applies nothing and retries nothing. A
// broken stream ends the record; Err says why. All read methods are safe to
// call while responses arrive.
package adsclient
