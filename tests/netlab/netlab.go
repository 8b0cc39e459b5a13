// Package netlab builds a small two-node pod network out of Linux network
// namespaces, for tests and benchmarks that need real kernel networking
// between pods without a cluster:
//
//	pod a ──veth── node1 ─┐                ┌─ node2 ──veth── pod c
//	10.200.1.10  10.200.1.1│   bridge br0   │10.200.2.1   10.200.2.10
//	pod b ──veth──┘        │  (host netns)  │
//	10.200.1.11 10.200.0.11└────────────────┘10.200.0.12
//
// The nodes meet on a bridge in a host namespace of the topology's own, as
// kind or a cloud VPC would put them on one L2 segment, rather than on a
// bare veth pair: the bridge is on every path alike, and the machine's own
// namespace is never touched. Links are created from inside the topology's
// namespaces, so not even a transient device appears in the machine's own.
//
// Node N's pods are in 10.200.N.0/24 and get .10, .11, ... in the order
// they are given. Each pod has a veth of its own to its node, the way the
// CNI ptp plugin (and so kind's kindnet), Calico, Cilium and the AWS VPC
// CNI wire pods, rather than a per-node bridge like the bridge plugin or
// flannel's cni0: the node's end carries the pod gateway address as a /32
// and a /32 route to the pod, and the pod sends everything, its own subnet
// included, to the gateway. So even two pods on one node talk through the
// node's routing (where a node proxy or its capture rules sit) and never
// over a shared L2 segment. Each node routes the other node's pod subnet to
// it and forwards: pods reach each other with their own addresses and no
// NAT anywhere, as on a flat pod network.
//
// Everything runs as root on Linux; elsewhere New fails.
package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
)

// Netns is a named network namespace (ip netns), bind-mounted under
// /run/netns so that `ip netns list` shows it while it exists.
type Netns struct{ Name string }

// Path is the namespace's bind mount, which setns accepts.
func (n Netns) Path() string { return "/run/netns/" + n.Name }

// PodSpec asks for one pod. Name is 1 to 8 characters of [a-z0-9], unique
// in the topology and none of "host", "node1", "node2"; it names the pod's
// namespace "<prefix>-<name>" and its node's end of the veth "veth-<name>".
// Node is 1 or 2.
type PodSpec struct {
	Name string
	Node int
}

// Pod is one pod of a topology.
type Pod struct {
	Name string
	Node int
	NS   Netns
	// IP is the pod's address, on eth0 in NS.
	IP netip.Addr
	// Gateway is the node's address towards its pods, 10.200.<Node>.1: the
	// pod's default route, and the source address of connections the node
	// itself opens to the pod.
	Gateway netip.Addr
}

// Topology is two nodes on a bridge and pods on each, all network
// namespaces named "<Prefix>-<role>".
type Topology struct {
	Prefix           string
	Host             Netns // holds the bridge between the nodes
	Node1, Node2     Netns
	Node1IP, Node2IP netip.Addr // on the node network 10.200.0.0/24
	Pods             []Pod      // in the order of the specs

	created []Netns // to delete, in creation order
}

// The address plan. The namespaces are private, so these can only clash
// with nothing.
var (
	nodeNet = netip.MustParsePrefix("10.200.0.0/24")
	nodeIPs = [3]netip.Addr{{}, netip.MustParseAddr("10.200.0.11"), netip.MustParseAddr("10.200.0.12")}
)

const (
	firstPodHost = 10  // pods get .10, .11, ... of their node's subnet
	lastPodHost  = 254 // .255 is the broadcast address
)

// podNet is node n's pod subnet, 10.200.n.0/24.
func podNet(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(n), 0}), 24)
}

func podAddr(n, host int) netip.Addr { return netip.AddrFrom4([4]byte{10, 200, byte(n), byte(host)}) }

// podLink is the node's end of a pod's veth: at most 13 characters, within
// the kernel's 15.
func podLink(pod string) string { return "veth-" + pod }

var podName = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// plan names and addresses everything, and checks the specs, without
// creating anything.
func plan(prefix string, specs []PodSpec) (*Topology, error) {
	if prefix == "" {
		return nil, errors.New("netlab: empty prefix")
	}
	ns := func(s string) Netns { return Netns{Name: prefix + "-" + s} }
	t := &Topology{
		Prefix:  prefix,
		Host:    ns("host"),
		Node1:   ns("node1"),
		Node2:   ns("node2"),
		Node1IP: nodeIPs[1],
		Node2IP: nodeIPs[2],
	}
	seen := map[string]bool{"host": true, "node1": true, "node2": true}
	next := [3]int{0, firstPodHost, firstPodHost}
	for _, s := range specs {
		if !podName.MatchString(s.Name) {
			return nil, fmt.Errorf("netlab: pod name %q: want 1 to 8 of [a-z0-9]", s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("netlab: pod name %q is taken", s.Name)
		}
		seen[s.Name] = true
		if s.Node != 1 && s.Node != 2 {
			return nil, fmt.Errorf("netlab: pod %s: node %d, want 1 or 2", s.Name, s.Node)
		}
		if next[s.Node] > lastPodHost {
			return nil, fmt.Errorf("netlab: pod %s: node%d's subnet is full", s.Name, s.Node)
		}
		t.Pods = append(t.Pods, Pod{
			Name:    s.Name,
			Node:    s.Node,
			NS:      ns(s.Name),
			IP:      podAddr(s.Node, next[s.Node]),
			Gateway: podAddr(s.Node, 1),
		})
		next[s.Node]++
	}
	return t, nil
}

// Pod returns the pod named name. It panics if there is none: the names
// come from the caller's own specs, so a miss is a bug in the caller.
func (t *Topology) Pod(name string) Pod {
	for _, p := range t.Pods {
		if p.Name == name {
			return p
		}
	}
	panic(fmt.Sprintf("netlab: topology %s has no pod %q", t.Prefix, name))
}

// Node returns node n's namespace; it panics unless n is 1 or 2.
func (t *Topology) Node(n int) Netns {
	switch n {
	case 1:
		return t.Node1
	case 2:
		return t.Node2
	}
	panic(fmt.Sprintf("netlab: no node %d", n))
}

// Namespaces returns the topology's namespaces: host, node1, node2, then
// the pods' in spec order.
func (t *Topology) Namespaces() []Netns {
	nss := []Netns{t.Host, t.Node1, t.Node2}
	for _, p := range t.Pods {
		nss = append(nss, p.NS)
	}
	return nss
}

// PidPrefix returns "<base>-<pid>", a prefix for New that keeps concurrent
// runs apart and lets Stale recognize the leftovers of a killed one.
func PidPrefix(base string) string { return fmt.Sprintf("%s-%d", base, os.Getpid()) }
