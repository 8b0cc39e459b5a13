// Package bench measures the mesh's candidate data paths side by side, in
// one run, on real kernel networking: a client pod on one node and a server
// pod on another, each a network namespace, with every proxy hop a separate
// process so its CPU and memory can be read from /proc.
//
// The parts:
//   - Topology: the namespaces, veth pairs, bridge and routes, built by
//     package tests/netlab (topology.go).
//   - Env: the topology plus a throwaway CA and the server process (env.go).
//   - Path: one data path under test; it starts its proxies and tells the
//     client what to dial (path*.go); the ztunnel path runs the real binary
//     through package tests/meshlab.
//   - the child roles (server, forwarder, client) that the harness runs by
//     re-executing its own binary inside a namespace (child.go).
//   - Run: the suite that measures every path and the Report with ratios
//     against the direct path and the TLS chain (suite.go, report.go).
//
// A binary that embeds the harness must call RunChildIfRequested first thing
// in main (or TestMain), because the harness starts its children that way.
// Everything runs as root on Linux; all figures come from the same run, and
// nothing here asserts a timing.
package bench
