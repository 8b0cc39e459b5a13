// Package zds implements ZDS, the protocol by which the node agent hands
// ztunnel the pods it must serve, for both ends: the agent's Server and
// ztunnel's Client, over a Conn that enforces the transport's rules.
//
// The transport is a SOCK_SEQPACKET unix socket ("unixpacket"), one protobuf
// message (package zdsapi) per packet, no framing. ztunnel connects and sends
// a ZdsHello; the agent sends WorkloadRequests and waits for an Ack after
// each. An AddWorkload packet carries the pod's network namespace as exactly
// one SCM_RIGHTS fd: ztunnel enters that netns to run the pod's listeners.
//
// Everything read from the socket is untrusted: packets are validated, and
// any fd that arrives with a rejected packet is closed, never leaked.
package zds
