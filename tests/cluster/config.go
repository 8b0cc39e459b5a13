package cluster

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
)

// Addresses of the cluster. The underlay is a bridge on the host; every node
// has one address on it and the host routes each node's pod CIDR through it.
const (
	UnderlayBridge = "lc-br0"
	// HostIP is the host's address on the underlay; the API server listens there.
	HostIP        = "10.250.0.1"
	underlayCIDR  = "10.250.0.0/24"
	underlayBits  = 24
	ClusterCIDR   = "10.244.0.0/16"
	ServiceCIDR   = "10.96.0.0/16"
	APIServiceIP  = "10.96.0.1"
	DNSServiceIP  = "10.96.0.10"
	ClusterDomain = "cluster.local"
	APIPort       = 6443
	etcdClientURL = "https://127.0.0.1:12379"
	etcdPeerURL   = "http://127.0.0.1:12380"
	// nodePrefix names node network namespaces and the host side of their veths.
	nodePrefix = "lc-"
)

// Config says where the cluster's binaries and state live and how big it is.
type Config struct {
	// Nodes is the number of worker nodes.
	Nodes int
	// StateDir holds certificates, kubeconfigs, logs, etcd data and each
	// node's private directories. `Down` removes it.
	StateDir string
	// KubeBinDir holds kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kube-proxy and kubectl of one release.
	KubeBinDir string
	// ImagesDir holds OCI image archives to import into every node.
	ImagesDir string
	// CNIPluginDir holds the reference CNI plugins (bridge, host-local, ...).
	CNIPluginDir string
	// PauseImage is the sandbox image containerd uses for every pod.
	PauseImage string
	// CoreDNSImage is the image of the cluster's DNS server.
	CoreDNSImage string
	// Out receives progress lines.
	Out io.Writer
}

// Node is one worker node of the cluster.
type Node struct {
	Index int
	Name  string
	IP    string
}

// NodeList returns the cluster's nodes, numbered from 1.
func (c *Config) NodeList() []Node {
	nodes := make([]Node, c.Nodes)
	for i := range nodes {
		nodes[i] = nodeAt(i + 1)
	}
	return nodes
}

// nodeAt is node number i (from 1): its name and underlay address follow
// from the number.
func nodeAt(i int) Node {
	return Node{Index: i, Name: fmt.Sprintf("node%d", i), IP: fmt.Sprintf("10.250.0.%d", 10+i)}
}

// Validate reports a configuration the harness cannot build.
func (c *Config) Validate() error {
	if c.Nodes < 1 || c.Nodes > 200 {
		return fmt.Errorf("nodes must be between 1 and 200, got %d", c.Nodes)
	}
	if c.StateDir == "" || c.KubeBinDir == "" {
		return fmt.Errorf("state dir and kube bin dir must be set")
	}
	if _, _, err := net.ParseCIDR(underlayCIDR); err != nil {
		return err
	}
	return nil
}

// AdminKubeconfig is the path of the cluster-admin kubeconfig.
func (c *Config) AdminKubeconfig() string { return filepath.Join(c.StateDir, "admin.kubeconfig") }

// Kubectl is the path of the kubectl built with the cluster.
func (c *Config) Kubectl() string { return filepath.Join(c.KubeBinDir, "kubectl") }

func (c *Config) pkiDir() string      { return filepath.Join(c.StateDir, "pki") }
func (c *Config) logDir() string      { return filepath.Join(c.StateDir, "logs") }
func (c *Config) pidDir() string      { return filepath.Join(c.StateDir, "pids") }
func (c *Config) nsDir() string       { return filepath.Join(c.StateDir, "ns") }
func (c *Config) bin(n string) string { return filepath.Join(c.KubeBinDir, n) }

func (c *Config) runNetnsMarker() string {
	return filepath.Join(c.StateDir, "run-netns-mounted-by-cluster")
}

func (c *Config) nodeDir(n Node) string       { return filepath.Join(c.StateDir, "nodes", n.Name) }
func (c *Config) nodeMountNS(n Node) string   { return filepath.Join(c.nsDir(), n.Name+".mnt") }
func (c *Config) nodeNetNSName(n Node) string { return nodePrefix + n.Name }
func (c *Config) nodeNetNS(n Node) string     { return filepath.Join("/run/netns", c.nodeNetNSName(n)) }

// Containerd returns the path, as seen from the host, of a node's containerd socket.
func (c *Config) Containerd(n Node) string {
	return filepath.Join(c.nodeDir(n), "run", "containerd", "containerd.sock")
}

// nodeMounts lists the directories each node keeps to itself: the host
// directory under the node's state is bind-mounted over the path a real node
// would use, inside the node's mount namespace only. The kubelet and runc
// resolve hostPath volumes in that namespace, so a pod's hostPath of
// /etc/cni/net.d, /opt/cni/bin or /var/run/<dir> (/var/run leads to the
// node's /run) is its node's own: shared by the pods of one node, never
// seen by another node's.
var nodeMounts = []struct{ dir, target string }{
	{"run", "/run"},
	{"var-lib-kubelet", "/var/lib/kubelet"},
	{"var-lib-containerd", "/var/lib/containerd"},
	{"var-lib-cni", "/var/lib/cni"},
	{"var-log", "/var/log"},
	{"etc-cni-net.d", "/etc/cni/net.d"},
	{"opt-cni-bin", "/opt/cni/bin"},
	{"etc-kubernetes", "/etc/kubernetes"},
}

// UnderlayLink is the host's end of a node's link to the underlay bridge:
// every packet between that node and the others crosses it.
func (c *Config) UnderlayLink(node string) string { return nodePrefix + node }
