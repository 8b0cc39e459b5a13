package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// setupUnderlay creates the host bridge every node is plugged into.
func (c *Config) setupUnderlay() error {
	if !linkExists("", UnderlayBridge) {
		if err := run("ip", "link", "add", UnderlayBridge, "type", "bridge"); err != nil {
			return err
		}
	}
	if err := run("ip", "addr", "replace", fmt.Sprintf("%s/%d", HostIP, underlayBits), "dev", UnderlayBridge); err != nil {
		return err
	}
	if err := run("ip", "link", "set", UnderlayBridge, "up"); err != nil {
		return err
	}
	return c.setHostForwarding()
}

// setHostForwarding turns on IPv4 forwarding so the host routes between
// nodes, remembering the original value for Down.
func (c *Config) setHostForwarding() error {
	const knob = "/proc/sys/net/ipv4/ip_forward"
	saved := filepath.Join(c.StateDir, "host-ip-forward")
	if !fileExists(saved) {
		orig, err := os.ReadFile(knob)
		if err != nil {
			return err
		}
		if err := writeFile(saved, orig, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(knob, []byte("1\n"), 0o644)
}

// setupNodeNetwork gives a node its network namespace, plugged into the
// underlay with its own address and a default route through the host.
func (c *Config) setupNodeNetwork(n Node) error {
	ns := c.nodeNetNSName(n)
	if !fileExists(c.nodeNetNS(n)) {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	if !linkExists(ns, "eth0") {
		if err := run("ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"ip", "link", "set", ns, "master", UnderlayBridge, "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "replace", fmt.Sprintf("%s/%d", n.IP, underlayBits), "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "replace", "default", "via", HostIP},
		// A node forwards for its pods, and bridged pod traffic must pass
		// kube-proxy's netfilter rules, as on any Kubernetes node.
		{"nsenter", "--net=" + c.nodeNetNS(n), "--", "sh", "-ec",
			"echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables; echo 1 > /proc/sys/net/bridge/bridge-nf-call-ip6tables"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}

// routePodCIDR makes a node's pod CIDR reachable from the host and from
// every other node, through that node's underlay address.
func (c *Config) routePodCIDR(owner Node, cidr string) error {
	if err := run("ip", "route", "replace", cidr, "via", owner.IP, "dev", UnderlayBridge); err != nil {
		return err
	}
	for _, n := range c.NodeList() {
		if n.Name == owner.Name {
			continue
		}
		if err := run("ip", "-n", c.nodeNetNSName(n), "route", "replace", cidr, "via", owner.IP, "dev", "eth0"); err != nil {
			return err
		}
	}
	return nil
}

func linkExists(netns, name string) bool {
	argv := []string{"ip"}
	if netns != "" {
		argv = append(argv, "-n", netns)
	}
	return run(append(argv, "link", "show", name)...) == nil
}

// setupNodeMounts creates the node's persistent mount namespace: a copy of
// the host's, with the node's private directories bind-mounted over the paths
// a real node uses, then made rshared as systemd does on a real node, so that
// mountPropagation works for the node's pods.
func (c *Config) setupNodeMounts(n Node) error {
	if err := c.ensureNSDir(); err != nil {
		return err
	}
	nsFile := c.nodeMountNS(n)
	if isMountPoint(nsFile) {
		return nil
	}
	if err := writeFile(nsFile, nil, 0o644); err != nil {
		return err
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	// Drop the copies of other nodes' namespace handles so this node does
	// not keep them alive.
	fmt.Fprintf(&script, "umount -l %q\n", c.nsDir())
	script.WriteString("if mountpoint -q /run/netns; then umount -l /run/netns; fi\n")
	for _, m := range nodeMounts {
		src := filepath.Join(c.nodeDir(n), m.dir)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %q %q\n", src, m.target)
	}
	// Node agents' hostPaths live under /var/run (the ZDS and CNI agent
	// sockets, the sandboxes' netns handles). Where /var/run is a
	// directory of its own rather than the usual link to /run, it gets the
	// node's /run too, or every node would share it.
	if !sameFile("/var/run", "/run") {
		fmt.Fprintf(&script, "mount --bind %q /var/run\n", filepath.Join(c.nodeDir(n), "run"))
	}
	script.WriteString("mount --make-rshared /\n")
	return run("unshare", "--mount="+nsFile, "--propagation=private", "--", "sh", "-c", script.String())
}

// sameFile reports whether two paths lead to the same file or directory.
func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// ensureNSDir makes the directory holding namespace handles a private mount,
// which binding a mount namespace to a file requires.
func (c *Config) ensureNSDir() error {
	dir := c.nsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if isMountPoint(dir) {
		return nil
	}
	if err := run("mount", "--bind", dir, dir); err != nil {
		return err
	}
	return run("mount", "--make-private", dir)
}

// isMountPoint reports whether path is a mount point in the host's mount namespace.
func isMountPoint(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for _, m := range mountPoints() {
		if m == abs {
			return true
		}
	}
	return false
}

// mountPoints lists the mount points of this process's mount namespace.
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out
}

// unescapeMount undoes the octal escapes mountinfo uses for spaces and the like.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupControllers lists the v1 hierarchies mounted under /sys/fs/cgroup.
func cgroupControllers() []string {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() && isMountPoint(p) {
			out = append(out, p)
		}
	}
	return out
}

// setupNodeCgroups creates /<node> in every hierarchy: the kubelet's
// cgroupRoot, under which it puts the node's pods.
func (c *Config) setupNodeCgroups(n Node) error {
	for _, ctrl := range cgroupControllers() {
		dir := filepath.Join(ctrl, n.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		// A new cpuset cgroup starts with no CPUs and no memory nodes.
		if filepath.Base(ctrl) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(ctrl, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("init %s/%s: %w", dir, f, err)
				}
			}
		}
	}
	return nil
}

// nodeDaemon runs argv inside the node's network and mount namespaces.
func (c *Config) nodeDaemon(n Node, component string, argv ...string) *daemon {
	full := append([]string{"nsenter", "--mount=" + c.nodeMountNS(n), "--net=" + c.nodeNetNS(n), "--"}, argv...)
	d := c.daemon(n.Name+"-"+component, full...)
	return d
}

func (c *Config) containerd(n Node) *daemon {
	return c.nodeDaemon(n, "containerd", "containerd", "--config", filepath.Join(c.nodeDir(n), "containerd.toml"))
}

func (c *Config) kubelet(n Node) *daemon {
	return c.nodeDaemon(n, "kubelet", c.bin("kubelet"),
		"--config="+filepath.Join(c.nodeDir(n), "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(c.nodeDir(n), "kubelet.kubeconfig"),
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP,
		"--v=1",
	)
}

func (c *Config) kubeProxy(n Node) *daemon {
	return c.nodeDaemon(n, "kube-proxy", c.bin("kube-proxy"),
		"--config="+filepath.Join(c.nodeDir(n), "kube-proxy.yaml"),
		"--v=1",
	)
}

// writeNodeConfigs writes containerd's, the kubelet's and kube-proxy's
// configuration for one node.
func (c *Config) writeNodeConfigs(n Node) error {
	dir := c.nodeDir(n)
	// runc cannot lower oom_score_adj here (no CAP_SYS_RESOURCE), so
	// containerd clamps every sandbox's and container's score to its own.
	containerd := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`, c.PauseImage)
	kubelet := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]q}
authorization:
  mode: Webhook
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /%[5]s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [%[6]q]
clusterDomain: %[7]s
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
shutdownGracePeriod: 0s
`, n.IP, c.pki("ca.crt"), c.pki(n.Name+"-kubelet-serving.crt"), c.pki(n.Name+"-kubelet-serving.key"),
		n.Name, DNSServiceIP, ClusterDomain)
	proxy := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %q
hostnameOverride: %s
bindAddress: 0.0.0.0
clusterCIDR: %s
mode: iptables
oomScoreAdj: 0
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 0.0.0.0:10256
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, filepath.Join(c.StateDir, "kube-proxy.kubeconfig"), n.Name, ClusterCIDR)
	for name, text := range map[string]string{"containerd.toml": containerd, "kubelet.yaml": kubelet, "kube-proxy.yaml": proxy} {
		if err := writeFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	// The reference CNI plugins the node's pod network uses.
	binDir := filepath.Join(dir, "opt-cni-bin")
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		b, err := os.ReadFile(filepath.Join(c.CNIPluginDir, p))
		if err != nil {
			return fmt.Errorf("CNI plugin %s: %w", p, err)
		}
		if err := writeFile(filepath.Join(binDir, p), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// writeCNIConfig writes the node's pod network: a bridge with the node's pod
// CIDR. Addresses are not masqueraded, so pods see each other's real IPs
// across nodes, which the mesh's identity and policy depend on.
func (c *Config) writeCNIConfig(n Node, podCIDR string) error {
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, podCIDR)
	return writeFile(filepath.Join(c.nodeDir(n), "etc-cni-net.d", "10-pods.conflist"), []byte(conf), 0o644)
}
