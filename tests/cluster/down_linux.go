package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Down stops everything Up started and removes the cluster's state: no
// process, mount, network namespace, link or cgroup of the cluster is left.
// It works from whatever is on the machine, so it also cleans up after a
// half-finished Up or a crashed harness.
func (c *Config) Down() error {
	var errs []error
	owned, foreign := c.nodesOnMachine()
	if len(foreign) > 0 {
		c.progress("leaving %v alone: they belong to a cluster with another state directory", foreign)
	}
	for _, n := range owned {
		c.progress("%s: stopping", n.Name)
		if err := c.downNode(n); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		}
	}
	c.progress("control plane: stopping")
	for _, d := range []*daemon{c.scheduler(), c.controllerManager(), c.apiserver(), c.etcd()} {
		d.stop(10 * time.Second)
	}
	if linkExists("", UnderlayBridge) && len(foreign) == 0 {
		if err := run("ip", "link", "del", UnderlayBridge); err != nil {
			errs = append(errs, err)
		}
	}
	saved := filepath.Join(c.StateDir, "host-ip-forward")
	if orig, err := os.ReadFile(saved); err == nil && len(foreign) == 0 {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", orig, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	if fileExists(c.runNetnsMarker()) && isMountPoint("/run/netns") {
		if entries, err := os.ReadDir("/run/netns"); err == nil && len(entries) == 0 {
			if err := unix.Unmount("/run/netns", unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount /run/netns: %w", err))
			}
		}
	}
	if isMountPoint(c.nsDir()) {
		if err := unix.Unmount(c.nsDir(), unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", c.nsDir(), err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Never delete through a mount that is still there.
	abs, _ := filepath.Abs(c.StateDir)
	for _, m := range mountPoints() {
		if strings.HasPrefix(m, abs+"/") {
			return fmt.Errorf("%s is still mounted; not removing %s", m, c.StateDir)
		}
	}
	if err := os.RemoveAll(c.StateDir); err != nil {
		return err
	}
	if left := c.leftovers(owned); len(left) > 0 {
		return fmt.Errorf("left behind after teardown: %s", strings.Join(left, "; "))
	}
	c.progress("down")
	return nil
}

// leftovers lists anything of the cluster still on the machine: the given
// nodes' network namespaces, links and cgroups, processes using its state
// directory (every daemon's command line names it), and mounts under it.
func (c *Config) leftovers(nodes []Node) []string {
	var left []string
	for _, n := range nodes {
		if fileExists(c.nodeNetNS(n)) {
			left = append(left, "netns "+c.nodeNetNSName(n))
		}
		if linkExists("", c.nodeNetNSName(n)) {
			left = append(left, "link "+c.nodeNetNSName(n))
		}
		for _, ctrl := range cgroupControllers() {
			if fileExists(filepath.Join(ctrl, n.Name)) {
				left = append(left, "cgroup "+filepath.Join(ctrl, n.Name))
			}
		}
	}
	abs, _ := filepath.Abs(c.StateDir)
	// The commands that called this one (make, a shell) name the state
	// directory too, and are not the cluster's.
	ancestors := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !ancestors[pid]; pid = parentOf(pid) {
		ancestors[pid] = true
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || ancestors[pid] || !processAlive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if abs != "" && strings.Contains(string(cmdline), abs+"/") {
			left = append(left, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	for _, m := range mountPoints() {
		if m == abs || strings.HasPrefix(m, abs+"/") {
			left = append(left, "mount "+m)
		}
	}
	return left
}

// nodesOnMachine finds the nodes that exist, whatever Config.Nodes says
// now, from their network namespaces, state directories and cgroups. A node
// is this cluster's when its state directory is under StateDir; a node
// namespace without one belongs to another checkout's cluster and is left
// alone.
func (c *Config) nodesOnMachine() (owned, foreign []Node) {
	seen := map[int]bool{}
	add := func(name string) {
		if i, err := strconv.Atoi(strings.TrimPrefix(name, "node")); err == nil && i > 0 && strings.HasPrefix(name, "node") {
			seen[i] = true
		}
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), nodePrefix) {
				add(strings.TrimPrefix(e.Name(), nodePrefix))
			}
		}
	}
	if entries, err := os.ReadDir(filepath.Join(c.StateDir, "nodes")); err == nil {
		for _, e := range entries {
			add(e.Name())
		}
	}
	var idx []int
	for i := range seen {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		n := nodeAt(i)
		if fileExists(c.nodeDir(n)) {
			owned = append(owned, n)
		} else {
			foreign = append(foreign, n)
		}
	}
	return owned, foreign
}

func (c *Config) downNode(n Node) error {
	// The kubelet first, so nothing restarts what is being stopped.
	c.kubelet(n).stop(10 * time.Second)
	c.kubeProxy(n).stop(5 * time.Second)
	// Every container of the node lives in a cgroup under /<node>.
	killCgroupTree(n.Name)
	// containerd, its shims, and anything else left in the node's namespaces.
	c.containerd(n).stop(5 * time.Second)
	killNamespaceMembers(c.nodeMountNS(n), "mnt")
	killNamespaceMembers(c.nodeNetNS(n), "net")
	var errs []error
	if err := removeCgroupTree(n.Name); err != nil {
		errs = append(errs, err)
	}
	if isMountPoint(c.nodeMountNS(n)) {
		if err := unix.Unmount(c.nodeMountNS(n), unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", c.nodeMountNS(n), err))
		}
	}
	if fileExists(c.nodeNetNS(n)) {
		if err := run("ip", "netns", "del", c.nodeNetNSName(n)); err != nil {
			errs = append(errs, err)
		}
	}
	if linkExists("", c.nodeNetNSName(n)) {
		if err := run("ip", "link", "del", c.nodeNetNSName(n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killCgroupTree kills every process in /<name> of every hierarchy, until
// none is left or ten seconds pass.
func killCgroupTree(name string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := cgroupTreePIDs(name)
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func cgroupTreePIDs(name string) []int {
	set := map[int]bool{}
	for _, ctrl := range cgroupControllers() {
		root := filepath.Join(ctrl, name)
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					set[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(set))
	for p := range set {
		pids = append(pids, p)
	}
	return pids
}

// removeCgroupTree removes /<name> and everything below it, deepest first.
func removeCgroupTree(name string) error {
	var errs []error
	for _, ctrl := range cgroupControllers() {
		root := filepath.Join(ctrl, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 50; try++ {
				if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// killNamespaceMembers kills every process whose namespace of the given
// kind is the one bound at nsPath.
func killNamespaceMembers(nsPath, kind string) {
	var st unix.Stat_t
	if err := unix.Stat(nsPath, &st); err != nil {
		return
	}
	want := fmt.Sprintf("%s:[%d]", kind, st.Ino)
	if !isMountPoint(nsPath) && kind == "mnt" {
		return
	}
	self := os.Getpid()
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind)); err == nil && link == want {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		killAndWait(pid, 3*time.Second)
	}
}

// parentOf returns a process's parent pid, or 0 if it cannot be read.
func parentOf(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: state, then ppid.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}
