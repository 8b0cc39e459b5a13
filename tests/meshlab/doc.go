// Package meshlab runs the real ztunnel binary on the netlab topology: one
// ztunnel per node namespace, a test control plane (Delta ADS and the CA,
// tests/controlplane) on a unix socket, a ZDS server per node standing in
// for the node agent, and in each enrolled pod the reference iptables
// redirection (../shared/PROTOCOLS.md) until the CNI's eBPF lands. The
// ztunnel netns suite and the benchmark both build on it.
package meshlab
