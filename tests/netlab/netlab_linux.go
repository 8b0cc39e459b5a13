package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// New creates the namespaces, links, addresses and routes of a topology
// with the given pods, all named with prefix (see PidPrefix). On error it
// removes what it created. Close undoes it.
func New(ctx context.Context, prefix string, pods []PodSpec) (_ *Topology, err error) {
	t, err := plan(prefix, pods)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	for _, ns := range t.Namespaces() {
		if err := ip(ctx, "netns", "add", ns.Name); err != nil {
			return nil, err
		}
		t.created = append(t.created, ns)
	}

	h, n1, n2 := t.Host.Name, t.Node1.Name, t.Node2.Name
	prefixed := func(a fmt.Stringer, p int) string { return fmt.Sprintf("%s/%d", a, p) }
	// The node network: each node's eth0 on the host namespace's bridge.
	steps := [][]string{
		{"-n", h, "link", "add", "br0", "type", "bridge"},
		{"-n", h, "link", "add", "node1", "type", "veth", "peer", "name", "eth0", "netns", n1},
		{"-n", h, "link", "add", "node2", "type", "veth", "peer", "name", "eth0", "netns", n2},
		{"-n", h, "link", "set", "node1", "master", "br0"},
		{"-n", h, "link", "set", "node2", "master", "br0"},
		{"-n", n1, "addr", "add", prefixed(t.Node1IP, nodeNet.Bits()), "dev", "eth0"},
		{"-n", n2, "addr", "add", prefixed(t.Node2IP, nodeNet.Bits()), "dev", "eth0"},
	}
	for _, args := range [][]string{
		{h, "lo"}, {h, "br0"}, {h, "node1"}, {h, "node2"},
		{n1, "lo"}, {n1, "eth0"},
		{n2, "lo"}, {n2, "eth0"},
	} {
		steps = append(steps, []string{"-n", args[0], "link", "set", args[1], "up"})
	}
	// Each pod: a veth to its node, ptp style (see the package comment).
	// The pod's address keeps its subnet's mask but not the subnet route,
	// so that the pod sends all but its gateway's traffic to the gateway.
	for _, p := range t.Pods {
		node, pod, link := t.Node(p.Node).Name, p.NS.Name, podLink(p.Name)
		steps = append(steps,
			[]string{"-n", node, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", pod},
			[]string{"-n", node, "addr", "add", prefixed(p.Gateway, 32), "dev", link},
			[]string{"-n", pod, "addr", "add", prefixed(p.IP, podNet(p.Node).Bits()), "dev", "eth0", "noprefixroute"},
			[]string{"-n", node, "link", "set", link, "up"},
			[]string{"-n", pod, "link", "set", "lo", "up"},
			[]string{"-n", pod, "link", "set", "eth0", "up"},
			[]string{"-n", node, "route", "add", prefixed(p.IP, 32), "dev", link},
			[]string{"-n", pod, "route", "add", p.Gateway.String(), "dev", "eth0", "scope", "link"},
			[]string{"-n", pod, "route", "add", "default", "via", p.Gateway.String(), "dev", "eth0"},
		)
	}
	// Each node routes the other's pod subnet to it.
	steps = append(steps,
		[]string{"-n", n1, "route", "add", podNet(2).String(), "via", t.Node2IP.String()},
		[]string{"-n", n2, "route", "add", podNet(1).String(), "via", t.Node1IP.String()},
	)
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return nil, err
		}
	}

	for _, n := range []Netns{t.Node1, t.Node2} {
		if err := WriteSysctl(n, "net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	// With br_netfilter in the kernel, bridged frames would go through the
	// host namespace's (empty) iptables hooks; a plain L2 segment does not.
	for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		err := WriteSysctl(t.Host, "net/bridge/"+key, "0")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return t, nil
}

// Close deletes the topology's namespaces, which takes their links with
// them. Processes still inside keep a namespace alive until they exit, so
// stop them first. Close is idempotent.
func (t *Topology) Close() error {
	// Cleanup must run even when the caller's context is already cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for i := len(t.created) - 1; i >= 0; i-- {
		if err := ip(ctx, "netns", "delete", t.created[i].Name); err != nil {
			errs = append(errs, err)
		}
	}
	t.created = nil
	return errors.Join(errs...)
}

// WriteSysctl sets a per-namespace sysctl; key is the path under
// /proc/sys, e.g. "net/ipv4/ip_forward". /proc/sys/net resolves against the
// namespace of the thread that opens it.
func WriteSysctl(ns Netns, key, value string) error {
	return InNetns(ns.Path(), func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, ns.Name, err)
		}
		return nil
	})
}

// DeleteNetns deletes the named namespaces, such as those Stale lists. It
// tries them all and joins the errors.
func DeleteNetns(ctx context.Context, names ...string) error {
	var errs []error
	for _, n := range names {
		errs = append(errs, ip(ctx, "netns", "delete", n))
	}
	return errors.Join(errs...)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// netnsNames lists the machine's named network namespaces.
func netnsNames(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}
