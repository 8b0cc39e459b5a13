package bench

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

// NewTopology creates the namespaces, links, addresses and routes of the
// topology, all named with prefix. On error it removes what it created.
// Links are created from inside the topology's namespaces, so not even a
// transient device appears in the machine's own.
func NewTopology(ctx context.Context, prefix string) (_ *Topology, err error) {
	t := planTopology(prefix)
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

	h, n1, n2, c, s := t.Host.Name, t.Node1.Name, t.Node2.Name, t.ClientPod.Name, t.ServerPod.Name
	prefixed := func(a fmt.Stringer, p int) string { return fmt.Sprintf("%s/%d", a, p) }
	steps := [][]string{
		{"-n", h, "link", "add", "br0", "type", "bridge"},
		{"-n", h, "link", "add", "node1", "type", "veth", "peer", "name", "eth0", "netns", n1},
		{"-n", h, "link", "add", "node2", "type", "veth", "peer", "name", "eth0", "netns", n2},
		{"-n", h, "link", "set", "node1", "master", "br0"},
		{"-n", h, "link", "set", "node2", "master", "br0"},
		{"-n", n1, "link", "add", "pod", "type", "veth", "peer", "name", "eth0", "netns", c},
		{"-n", n2, "link", "add", "pod", "type", "veth", "peer", "name", "eth0", "netns", s},

		{"-n", n1, "addr", "add", prefixed(t.Node1IP, nodeNet.Bits()), "dev", "eth0"},
		{"-n", n2, "addr", "add", prefixed(t.Node2IP, nodeNet.Bits()), "dev", "eth0"},
		{"-n", n1, "addr", "add", prefixed(t.Node1PodGateway, node1PodNet.Bits()), "dev", "pod"},
		{"-n", n2, "addr", "add", prefixed(t.Node2PodGateway, node2PodNet.Bits()), "dev", "pod"},
		{"-n", c, "addr", "add", prefixed(t.ClientIP, node1PodNet.Bits()), "dev", "eth0"},
		{"-n", s, "addr", "add", prefixed(t.ServerIP, node2PodNet.Bits()), "dev", "eth0"},
	}
	up := map[string][]string{
		h:  {"lo", "br0", "node1", "node2"},
		n1: {"lo", "eth0", "pod"},
		n2: {"lo", "eth0", "pod"},
		c:  {"lo", "eth0"},
		s:  {"lo", "eth0"},
	}
	for _, ns := range t.Namespaces() {
		for _, dev := range up[ns.Name] {
			steps = append(steps, []string{"-n", ns.Name, "link", "set", dev, "up"})
		}
	}
	steps = append(steps,
		[]string{"-n", c, "route", "add", "default", "via", t.Node1PodGateway.String()},
		[]string{"-n", s, "route", "add", "default", "via", t.Node2PodGateway.String()},
		[]string{"-n", n1, "route", "add", node2PodNet.String(), "via", t.Node2IP.String()},
		[]string{"-n", n2, "route", "add", node1PodNet.String(), "via", t.Node1IP.String()},
	)
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return nil, err
		}
	}

	for _, n := range []Netns{t.Node1, t.Node2} {
		if err := writeSysctl(n, "net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	// With br_netfilter in the kernel, bridged frames would go through the
	// host namespace's (empty) iptables hooks; a plain L2 segment does not.
	for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		err := writeSysctl(t.Host, "net/bridge/"+key, "0")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return t, nil
}

// Close deletes the topology's namespaces, which takes their links with
// them. Processes still inside keep a namespace alive until they exit, so
// stop them first.
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

// writeSysctl sets a per-namespace sysctl: /proc/sys/net resolves against
// the namespace of the thread that opens it.
func writeSysctl(ns Netns, key, value string) error {
	return inNetns(ns.Path(), func() error {
		if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, ns.Name, err)
		}
		return nil
	})
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

func deleteNetns(ctx context.Context, name string) error {
	return ip(ctx, "netns", "delete", name)
}
