package redirect_test

import (
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"

	vnetlink "github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/cni/internal/redirect/redirecttest"
	"github.com/ambient-mesh/mesh/pkg/netns"
)

// TestEBPF holds the eBPF mode to the behaviour every mode must have, with
// real connections through real namespaces.
func TestEBPF(t *testing.T) {
	redirect.NeedEBPF(t)
	redirecttest.Run(t, func(t *testing.T) redirect.Mode { return redirect.NewEBPF(nil) })
}

// TestEBPFInstallsAndRemoves looks at what the mode leaves in a namespace:
// one filter per hook however often it is applied, and nothing at all,
// down to the clsact qdiscs and lo's accept_local, after Remove.
func TestEBPFInstallsAndRemoves(t *testing.T) {
	redirect.NeedEBPF(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := vnetlink.NewHandleAt(vnetns.NsHandle(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	veth := &vnetlink.Veth{LinkAttrs: vnetlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
	m := redirect.NewEBPF(nil)

	type state struct {
		filters map[string]int // "<link> <ingress|egress> <name>" -> count
		clsact  int
		rules   int
		routes  int
		accept  string
	}
	read := func() state {
		t.Helper()
		s := state{filters: map[string]int{}}
		links, err := h.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			for dir, parent := range map[string]uint32{"ingress": vnetlink.HANDLE_MIN_INGRESS, "egress": vnetlink.HANDLE_MIN_EGRESS} {
				fs, _ := h.FilterList(l, parent)
				for _, f := range fs {
					name := "?"
					if bf, ok := f.(*vnetlink.BpfFilter); ok {
						name = bf.Name
					}
					s.filters[fmt.Sprintf("%s %s %s", l.Attrs().Name, dir, name)]++
				}
			}
			qs, err := h.QdiscList(l)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range qs {
				if q.Type() == "clsact" {
					s.clsact++
				}
			}
		}
		rules, err := h.RuleList(unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if r.Table == redirect.RedirectTable {
				s.rules++
			}
		}
		routes, err := h.RouteListFiltered(unix.AF_INET, &vnetlink.Route{Table: redirect.RedirectTable}, vnetlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		s.routes = len(routes)
		err = ns.Do(func() error {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/lo/accept_local")
			s.accept = strings.TrimSpace(string(b))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	for range 2 {
		if err := m.Apply(path, redirect.Config{DNSCapture: true}); err != nil {
			t.Fatal(err)
		}
	}
	got := read()
	wantFilters := map[string]int{
		"lo ingress ambient_loopback_ingress": 1,
		"eth0 ingress ambient_pod_ingress":    1,
		"eth0 egress ambient_pod_egress":      1,
		"peer0 ingress ambient_pod_ingress":   1, // every Ethernet link of the pod
		"peer0 egress ambient_pod_egress":     1,
	}
	if !maps.Equal(got.filters, wantFilters) || got.clsact != 3 || got.rules != 1 || got.routes != 1 || got.accept != "1" {
		t.Errorf("after applying twice: %+v; want filters %v, 3 clsact, 1 rule, 1 route, accept_local 1", got, wantFilters)
	}

	if err := m.Remove(path); err != nil {
		t.Fatal(err)
	}
	got = read()
	if len(got.filters) != 0 || got.clsact != 0 || got.rules != 0 || got.routes != 0 || got.accept != "0" {
		t.Errorf("after Remove: %+v; want nothing left", got)
	}
}

// TestEBPFConcurrentPods applies and removes the mode in several
// namespaces at once, as the node agent does for pods starting together.
func TestEBPFConcurrentPods(t *testing.T) {
	redirect.NeedEBPF(t)
	m := redirect.NewEBPF(nil)
	var paths []string
	for range 4 {
		ns, err := netns.New()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		err = ns.Do(func() error {
			return vnetlink.LinkAdd(&vnetlink.Veth{LinkAttrs: vnetlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"})
		})
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd()))
	}
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Go(func() {
			for range 3 {
				if err := m.Apply(p, redirect.Config{}); err != nil {
					t.Errorf("apply %s: %v", p, err)
					return
				}
			}
			if err := m.Remove(p); err != nil {
				t.Errorf("remove %s: %v", p, err)
			}
		})
	}
	wg.Wait()
}
