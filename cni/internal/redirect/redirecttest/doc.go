// Package redirecttest is the behavioural test suite every redirection
// mode must pass. It builds a small network of namespaces, applies the mode
// to one pod, stands in for ztunnel inside that pod with listeners that
// report where each connection landed and which original destination they
// recovered, and checks the reference behaviour of package redirect
// connection by connection. It looks only at traffic, never at how a mode
// installs itself, so the eBPF and nftables modes are held to the same
// tests.
//
// Run needs root (it creates network namespaces) and Linux; elsewhere, or
// without root, it skips.
package redirecttest
