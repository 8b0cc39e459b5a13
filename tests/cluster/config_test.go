package cluster

import (
	"net"
	"testing"
)

func TestNodeListGivesDistinctAddressesOnTheUnderlay(t *testing.T) {
	c := &Config{Nodes: 5, StateDir: "/x", KubeBinDir: "/y"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	_, underlay, _ := net.ParseCIDR(underlayCIDR)
	seen := map[string]bool{HostIP: true}
	for i, n := range c.NodeList() {
		if n.Index != i+1 {
			t.Errorf("node %d has index %d", i, n.Index)
		}
		ip := net.ParseIP(n.IP)
		if ip == nil || !underlay.Contains(ip) {
			t.Errorf("%s: address %s not on the underlay %s", n.Name, n.IP, underlayCIDR)
		}
		if seen[n.IP] {
			t.Errorf("%s: address %s used twice", n.Name, n.IP)
		}
		seen[n.IP] = true
		if len(c.nodeNetNSName(n)) > 15 {
			t.Errorf("%s: %q is too long for an interface name", n.Name, c.nodeNetNSName(n))
		}
	}
}

func TestValidateRejectsBadSizes(t *testing.T) {
	for _, n := range []int{0, -1, 201} {
		c := &Config{Nodes: n, StateDir: "/x", KubeBinDir: "/y"}
		if c.Validate() == nil {
			t.Errorf("nodes=%d accepted", n)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:               "/plain",
		`/with\040space`:       "/with space",
		`/tab\011and\134slash`: "/tab\tand\\slash",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDaemonFindsTheProgramBehindNsenter(t *testing.T) {
	c := &Config{StateDir: "/s", KubeBinDir: "/k"}
	n := Node{Index: 1, Name: "node1", IP: "10.250.0.11"}
	if got := c.kubelet(n).prog; got != "kubelet" {
		t.Errorf("kubelet daemon watches %q", got)
	}
	if got := c.etcd().prog; got != "etcd" {
		t.Errorf("etcd daemon watches %q", got)
	}
}
