// Package inbound serves the HBONE tunnels that arrive at an enrolled pod's
// port 15008: mutual TLS with the pod's certificate, the CONNECT target
// checked against the pod, L4 authorization of the peer's verified
// identity, then a connection to the app and bytes both ways.
package inbound
