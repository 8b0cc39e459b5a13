package nodeagent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// ScanProc finds a running pod's network namespace by looking, in every
// distinct network namespace of the processes the agent can see (it runs
// with the host's PID namespace), for an interface holding the pod's IP.
// Pod IPs are unique in the cluster, so the match is the pod's. It returns
// the namespace open.
func ScanProc(ctx context.Context, pod *corev1.Pod) (*os.File, error) {
	var want []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			want = append(want, a)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("pod %s/%s has no IP yet", pod.Namespace, pod.Name)
	}
	own, err := inode("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{own: true}
	for _, p := range procs {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		path := filepath.Join("/proc", p.Name(), "ns", "net")
		ino, err := inode(path)
		if err != nil || seen[ino] {
			continue // gone already, or a namespace looked at before
		}
		seen[ino] = true
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if holds(f, want) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("no network namespace on this node holds %v (pod %s/%s)", want, pod.Namespace, pod.Name)
}

func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// holds reports whether the namespace f has an interface with one of the
// addresses.
func holds(f *os.File, want []netip.Addr) bool {
	dup, err := os.Open(fdPath(f))
	if err != nil {
		return false
	}
	ns, err := netns.FromFile(dup)
	if err != nil {
		dup.Close()
		return false
	}
	defer ns.Close()
	found := false
	_ = ns.Do(func() error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				for _, w := range want {
					if ip.Unmap() == w.Unmap() {
						found = true
					}
				}
			}
		}
		return nil
	})
	return found
}
