package hostprobe

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// lab is a node namespace with two pods behind veths, each pod running a
// server that answers with the address it saw the connection come from.
type lab struct {
	node       *netns.NS
	pods       [2]netip.Addr
	nodeAddr   netip.Addr
	listenAddr [2]string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and nftables rules")
	}
	base := fmt.Sprintf("hp-%d", os.Getpid())
	l := &lab{nodeAddr: netip.MustParseAddr("10.252.0.1"), pods: [2]netip.Addr{netip.MustParseAddr("10.252.0.2"), netip.MustParseAddr("10.252.0.3")}}
	node := base + "-node"
	run(t, "ip", "netns", "add", node)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", node).Run() })
	run(t, "ip", "-n", node, "link", "set", "lo", "up")
	for i, ip := range l.pods {
		pod := fmt.Sprintf("%s-pod%d", base, i)
		run(t, "ip", "netns", "add", pod)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", pod).Run() })
		host, peer := fmt.Sprintf("hp%dh%d", os.Getpid()%10000, i), fmt.Sprintf("hp%dp%d", os.Getpid()%10000, i)
		run(t, "ip", "-n", node, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", pod)
		run(t, "ip", "-n", node, "addr", "add", l.nodeAddr.String()+"/32", "dev", host)
		run(t, "ip", "-n", node, "link", "set", host, "up")
		run(t, "ip", "-n", node, "route", "add", ip.String()+"/32", "dev", host)
		run(t, "ip", "-n", pod, "link", "set", "lo", "up")
		run(t, "ip", "-n", pod, "addr", "add", ip.String()+"/32", "dev", peer)
		run(t, "ip", "-n", pod, "link", "set", peer, "up")
		run(t, "ip", "-n", pod, "route", "add", l.nodeAddr.String()+"/32", "dev", peer)
		run(t, "ip", "-n", pod, "route", "add", "default", "via", l.nodeAddr.String(), "dev", peer, "onlink")
		pns, err := netns.Open("/run/netns/" + pod)
		if err != nil {
			t.Fatal(err)
		}
		var ln net.Listener
		if err := pns.Do(func() (err error) { ln, err = net.Listen("tcp4", ip.String()+":8080"); return err }); err != nil {
			t.Fatal(err)
		}
		pns.Close()
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
				c.Close()
			}
		}()
		l.listenAddr[i] = ip.String() + ":8080"
	}
	var err error
	if l.node, err = netns.Open("/run/netns/" + node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.node.Close() })
	return l
}

// seenFrom connects from the node to pod i and returns the source address
// the pod saw.
func (l *lab) seenFrom(t *testing.T, i int) string {
	t.Helper()
	var line string
	err := l.node.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(context.Background(), "tcp4", l.listenAddr[i])
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Fatalf("connect from the node to pod %d: %v", i, err)
	}
	return strings.TrimSpace(line)
}

// TestProbeSource: the node's connections to pods in the set come from
// 169.254.7.127, to others from the node's address; the set follows Add
// and Delete, and Remove takes everything out.
func TestProbeSource(t *testing.T) {
	l := newLab(t)
	node, src := l.nodeAddr.String(), Source.String()
	if got := l.seenFrom(t, 0); got != node {
		t.Fatalf("before install: pod 0 saw %s, want %s", got, node)
	}
	var s SNAT
	if err := l.node.Do(func() error { return s.Install([]netip.Addr{l.pods[0]}) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Remove() })
	if got := l.seenFrom(t, 0); got != src {
		t.Errorf("enrolled pod 0 saw %s, want %s", got, src)
	}
	if got := l.seenFrom(t, 1); got != node {
		t.Errorf("pod 1, not enrolled, saw %s, want %s", got, node)
	}
	// Add and Delete work from any thread: the table stays in the node's
	// namespace.
	if err := s.Add(l.pods[1]); err != nil {
		t.Fatal(err)
	}
	if got := l.seenFrom(t, 1); got != src {
		t.Errorf("after Add, pod 1 saw %s, want %s", got, src)
	}
	if err := s.Delete(l.pods[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(l.pods[0]); err != nil {
		t.Errorf("deleting an address twice: %v", err)
	}
	if got := l.seenFrom(t, 0); got != node {
		t.Errorf("after Delete, pod 0 saw %s, want %s", got, node)
	}
	// A restarting agent installs again: the addresses stay, so probes
	// keep their source while it finds its pods.
	var again SNAT
	if err := l.node.Do(func() error { return again.Install(nil) }); err != nil {
		t.Fatalf("install again: %v", err)
	}
	if got := l.seenFrom(t, 1); got != src {
		t.Errorf("after a second Install, pod 1 saw %s, want %s still", got, src)
	}
	if out, err := exec.Command("ip", "netns", "exec", "hp-"+fmt.Sprint(os.Getpid())+"-node", "nft", "list", "chain", "ip", Table, "postrouting").CombinedOutput(); err != nil || strings.Count(string(out), "snat") != 1 {
		t.Errorf("after a second Install the chain holds %d rules (want 1): %v\n%s", strings.Count(string(out), "snat"), err, out)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := l.seenFrom(t, 0); got != node {
		t.Errorf("after Remove, pod 0 saw %s, want %s", got, node)
	}
}
