package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// Up brings the cluster up, or finishes bringing it up: every step checks
// what is already there, so running it twice is harmless.
func (c *Config) Up(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := c.preflight(); err != nil {
		return err
	}
	start := time.Now()
	c.progress("certificates and kubeconfigs in %s", c.pkiDir())
	if _, err := c.writePKI(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}

	c.progress("etcd")
	etcd := c.etcd()
	if err := etcd.start(); err != nil {
		return err
	}
	if err := etcd.waitFor(ctx, "healthy", time.Minute, c.etcdCheck); err != nil {
		return err
	}

	c.progress("underlay bridge %s (%s)", UnderlayBridge, HostIP)
	if err := c.setupUnderlay(); err != nil {
		return fmt.Errorf("underlay: %w", err)
	}

	c.progress("kube-apiserver on https://%s:%d", HostIP, APIPort)
	api := c.apiserver()
	if err := api.start(); err != nil {
		return err
	}
	if err := api.waitFor(ctx, "ready", 2*time.Minute, c.httpsCheck(fmt.Sprintf("https://%s:%d/readyz", HostIP, APIPort))); err != nil {
		return err
	}
	c.progress("kube-controller-manager, kube-scheduler")
	cm, sched := c.controllerManager(), c.scheduler()
	for _, d := range []*daemon{cm, sched} {
		if err := d.start(); err != nil {
			return err
		}
	}
	if err := cm.waitFor(ctx, "healthy", time.Minute, c.httpsCheck("https://127.0.0.1:10257/healthz")); err != nil {
		return err
	}
	if err := sched.waitFor(ctx, "healthy", time.Minute, c.httpsCheck("https://127.0.0.1:10259/healthz")); err != nil {
		return err
	}

	client, err := c.Client()
	if err != nil {
		return err
	}
	// `ip netns add` mounts /run/netns on first use; Down undoes it only if
	// the cluster was the one that did it.
	if !isMountPoint("/run/netns") && !fileExists(c.runNetnsMarker()) {
		if err := writeFile(c.runNetnsMarker(), nil, 0o644); err != nil {
			return err
		}
	}
	podCIDRs := map[string]string{}
	for _, n := range c.NodeList() {
		cidr, err := c.upNode(ctx, client, n)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		podCIDRs[n.Name] = cidr
	}
	for _, n := range c.NodeList() {
		if err := c.routePodCIDR(n, podCIDRs[n.Name]); err != nil {
			return fmt.Errorf("route pod CIDR of %s: %w", n.Name, err)
		}
	}
	for _, n := range c.NodeList() {
		if err := c.waitNodeReady(ctx, client, n); err != nil {
			return err
		}
	}

	c.progress("cluster DNS (CoreDNS)")
	if err := c.deployDNS(ctx); err != nil {
		return fmt.Errorf("cluster DNS: %w", err)
	}
	c.progress("ready in %s; kubeconfig: %s", time.Since(start).Round(time.Second), c.AdminKubeconfig())
	return nil
}

func (c *Config) progress(format string, args ...any) {
	if c.Out != nil {
		fmt.Fprintf(c.Out, "cluster: "+format+"\n", args...)
	}
}

// preflight names every missing prerequisite at once.
func (c *Config) preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root (network and mount namespaces, cgroups)")
	}
	var missing []string
	for _, p := range []string{"etcd", "containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "nsenter", "unshare", "mount", "umount", "mountpoint"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"} {
		if !fileExists(c.bin(b)) {
			missing = append(missing, c.bin(b))
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if !fileExists(filepath.Join(c.CNIPluginDir, p)) {
			missing = append(missing, filepath.Join(c.CNIPluginDir, p))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing (run `make deps`): %s", strings.Join(missing, ", "))
	}
	// A node's private directories hide whatever the host has below them,
	// so the cluster's own files must live elsewhere.
	for _, dir := range []string{c.StateDir, c.KubeBinDir, c.ImagesDir} {
		for _, m := range nodeMounts {
			if dir == m.target || strings.HasPrefix(dir, m.target+"/") {
				return fmt.Errorf("%s is under %s, which every node replaces with its own; put the checkout or CLUSTER_STATE elsewhere", dir, m.target)
			}
		}
	}
	// Node names and addresses are fixed, so two checkouts cannot each run a
	// cluster: say so rather than half-share one.
	first := c.NodeList()[0]
	if fileExists(c.nodeNetNS(first)) && !fileExists(c.nodeDir(first)) {
		return fmt.Errorf("network namespace %s belongs to a cluster with another state directory than %s; take that one down first (`make cluster-down` in its checkout)", c.nodeNetNSName(first), c.StateDir)
	}
	return nil
}

// Client returns a cluster-admin clientset.
func (c *Config) Client() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig())
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// upNode starts one node: network, mounts, cgroups, containerd with the
// images preloaded, the kubelet, kube-proxy, and the pod network once the
// controller-manager has given the node its pod CIDR, which it returns.
func (c *Config) upNode(ctx context.Context, client kubernetes.Interface, n Node) (string, error) {
	c.progress("%s: network namespace %s, address %s", n.Name, c.nodeNetNSName(n), n.IP)
	if err := c.setupNodeNetwork(n); err != nil {
		return "", fmt.Errorf("network: %w", err)
	}
	if err := c.setupNodeMounts(n); err != nil {
		return "", fmt.Errorf("mounts: %w", err)
	}
	if err := c.setupNodeCgroups(n); err != nil {
		return "", fmt.Errorf("cgroups: %w", err)
	}
	if err := c.writeNodeConfigs(n); err != nil {
		return "", err
	}
	c.progress("%s: containerd", n.Name)
	ctrd := c.containerd(n)
	if err := ctrd.start(); err != nil {
		return "", err
	}
	if err := ctrd.waitFor(ctx, "serving", time.Minute, func(context.Context) error {
		return run("ctr", "--address", c.Containerd(n), "version")
	}); err != nil {
		return "", err
	}
	if err := c.importImages(n); err != nil {
		return "", err
	}
	c.progress("%s: kubelet, kube-proxy", n.Name)
	kubelet, proxy := c.kubelet(n), c.kubeProxy(n)
	for _, d := range []*daemon{kubelet, proxy} {
		if err := d.start(); err != nil {
			return "", err
		}
	}
	var podCIDR string
	if err := kubelet.waitFor(ctx, "registered with a pod CIDR", 2*time.Minute, func(ctx context.Context) error {
		node, err := client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Spec.PodCIDR == "" {
			return errors.New("no pod CIDR yet")
		}
		podCIDR = node.Spec.PodCIDR
		return nil
	}); err != nil {
		return "", err
	}
	c.progress("%s: pod CIDR %s", n.Name, podCIDR)
	return podCIDR, c.writeCNIConfig(n, podCIDR)
}

func (c *Config) waitNodeReady(ctx context.Context, client kubernetes.Interface, n Node) error {
	return c.kubelet(n).waitFor(ctx, "Ready", 3*time.Minute, func(ctx context.Context) error {
		if _, ok := c.kubeProxy(n).running(); !ok {
			return fmt.Errorf("kube-proxy is not running; log %s:\n%s", c.kubeProxy(n).log, tail(c.kubeProxy(n).log, 15))
		}
		node, err := client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("%s: %s", cond.Reason, cond.Message)
			}
		}
		return errors.New("no Ready condition yet")
	})
}

// importImages loads every image archive into the node's containerd, in
// the namespace the kubelet uses. Nothing is ever pulled from a registry.
func (c *Config) importImages(n Node) error {
	archives, err := filepath.Glob(filepath.Join(c.ImagesDir, "*.tar"))
	if err != nil {
		return err
	}
	if len(archives) == 0 {
		return fmt.Errorf("no image archives in %s (run `make images`)", c.ImagesDir)
	}
	for _, a := range archives {
		if err := run("ctr", "--address", c.Containerd(n), "-n", "k8s.io", "images", "import", a); err != nil {
			return fmt.Errorf("import %s: %w", filepath.Base(a), err)
		}
	}
	return nil
}

// LoadImages imports the image archives into every running node.
func (c *Config) LoadImages() error {
	for _, n := range c.NodeList() {
		if err := c.importImages(n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	return nil
}

// Running reports whether the cluster's API server answers.
func (c *Config) Running(ctx context.Context) bool {
	if _, ok := c.apiserver().running(); !ok {
		return false
	}
	return c.httpsCheck(fmt.Sprintf("https://%s:%d/readyz", HostIP, APIPort))(ctx) == nil
}

// lookupInNode resolves name through the cluster DNS Service, from inside
// a node's network namespace, as a pod's resolver would.
func (c *Config) lookupInNode(ctx context.Context, n Node, name string) ([]string, error) {
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			ns, err := netns.Open(c.nodeNetNS(n))
			if err != nil {
				return nil, err
			}
			defer ns.Close()
			var conn net.Conn
			err = ns.Do(func() (err error) {
				conn, err = net.DialTimeout(network, net.JoinHostPort(DNSServiceIP, "53"), 5*time.Second)
				return err
			})
			return conn, err
		},
	}
	return r.LookupHost(ctx, name)
}
