package netlab

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestPlan(t *testing.T) {
	top, err := plan("zt-1", []PodSpec{{"a", 1}, {"c", 2}, {"b", 1}, {"d", 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, ns, ip, gw string
		node             int
	}{
		{"a", "zt-1-a", "10.200.1.10", "10.200.1.1", 1},
		{"c", "zt-1-c", "10.200.2.10", "10.200.2.1", 2},
		{"b", "zt-1-b", "10.200.1.11", "10.200.1.1", 1},
		{"d", "zt-1-d", "10.200.2.11", "10.200.2.1", 2},
	}
	if len(top.Pods) != len(want) {
		t.Fatalf("%d pods, want %d", len(top.Pods), len(want))
	}
	for i, w := range want {
		p := top.Pods[i]
		if p.Name != w.name || p.NS.Name != w.ns || p.IP != netip.MustParseAddr(w.ip) || p.Gateway != netip.MustParseAddr(w.gw) || p.Node != w.node {
			t.Errorf("pod %d: %+v, want %+v", i, p, w)
		}
		if top.Pod(w.name) != p {
			t.Errorf("Pod(%q) = %+v, want %+v", w.name, top.Pod(w.name), p)
		}
		if top.Node(p.Node) != (Netns{Name: fmt.Sprintf("zt-1-node%d", w.node)}) {
			t.Errorf("Node(%d) = %v", p.Node, top.Node(p.Node))
		}
	}
	if top.Node1IP != netip.MustParseAddr("10.200.0.11") || top.Node2IP != netip.MustParseAddr("10.200.0.12") {
		t.Errorf("node IPs %s, %s", top.Node1IP, top.Node2IP)
	}
	var names []string
	for _, ns := range top.Namespaces() {
		names = append(names, ns.Name)
	}
	if got, want := len(names), 7; got != want || names[0] != "zt-1-host" || names[6] != "zt-1-d" {
		t.Errorf("namespaces %v", names)
	}
	for _, p := range top.Pods {
		if l := podLink(p.Name); len(l) > 15 {
			t.Errorf("link name %s is longer than 15", l)
		}
	}
}

func TestPlanRejects(t *testing.T) {
	full := make([]PodSpec, lastPodHost-firstPodHost+2)
	for i := range full {
		full[i] = PodSpec{Name: fmt.Sprintf("p%d", i), Node: 1}
	}
	if _, err := plan("zt-1", full[:len(full)-1]); err != nil {
		t.Errorf("a full subnet: %v", err)
	}
	for name, specs := range map[string][]PodSpec{
		"uppercase":    {{"Client", 1}},
		"too long":     {{"abcdefghi", 1}},
		"empty name":   {{"", 1}},
		"hyphen":       {{"a-b", 1}},
		"duplicate":    {{"a", 1}, {"a", 2}},
		"reserved":     {{"node1", 2}},
		"node 0":       {{"a", 0}},
		"node 3":       {{"a", 3}},
		"subnet full":  full,
		"empty prefix": nil,
	} {
		prefix := "zt-1"
		if name == "empty prefix" {
			prefix = ""
		}
		if _, err := plan(prefix, specs); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestPodPanicsOnUnknownName(t *testing.T) {
	top, err := plan("zt-1", []PodSpec{{"a", 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Pod(\"b\") did not panic")
		}
	}()
	top.Pod("b")
}
