package meshlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ambient-mesh/mesh/pkg/netns"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/zds"
	"github.com/ambient-mesh/mesh/pkg/zdsapi"
	"github.com/ambient-mesh/mesh/tests/controlplane"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

// Token is the node token the test CA accepts.
const Token = "meshlab-node-token"

// TrustDomain of the test mesh.
const TrustDomain = "cluster.local"

// PodSpec is a pod of the test mesh.
type PodSpec struct {
	Name string
	Node int
	// Namespace and ServiceAccount default to "default" and the pod's name.
	Namespace, ServiceAccount string
	// Mesh enrolls the pod: redirection in its netns, handed to its node's
	// ztunnel, and described to ztunnels as an HBONE workload. Other pods
	// are described as plain workloads, as istiod describes pods outside
	// the mesh.
	Mesh bool
}

// Options configure a mesh.
type Options struct {
	// Prefix names the namespaces (netlab.PidPrefix("zt") for example).
	Prefix string
	// Dir holds sockets, certificates and logs; it must exist.
	Dir string
	// Ztunnel is the binary; Build makes one.
	Ztunnel string
	Pods    []PodSpec
	// Args are extra ztunnel flags.
	Args []string
	// Topology, if set, is used instead of a new one (and left to its
	// owner to close); Pods then name pods of it.
	Topology *netlab.Topology
	// CapturePorts, if set, limits redirection to TCP to these ports, so
	// that other traffic of the same pods bypasses the mesh (the benchmark
	// measures other paths between the same pods at the same time).
	CapturePorts []uint16
	// CATTL, if set, is the validity of every workload certificate the CA
	// issues (controlplane.Server.SetCATTL), from the ztunnels' first fetch.
	CATTL time.Duration
	// Env is added to the ztunnels' environment (KEY=VALUE), such as
	// GOMAXPROCS=1.
	Env []string
}

// Mesh is a running test mesh.
type Mesh struct {
	Topo      *netlab.Topology
	CP        *controlplane.Server
	Authority *controlplane.Authority
	Nodes     [2]*Node
	opts      Options
	specs     map[string]PodSpec
	ownTopo   bool
	captured  []string
}

// Node is one node's ztunnel and node agent stand-in.
type Node struct {
	N       int
	NS      netlab.Netns
	ZDS     *zds.Server
	ZDSPath string
	LogPath string

	mu       sync.Mutex
	enrolled map[string]zds.Workload // by pod UID, netns open
	cmd      *exec.Cmd
	exited   chan struct{}
	zdsStop  context.CancelFunc
	zdsDone  chan struct{}
}

// Build compiles ztunnel into dir and returns its path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "ztunnel")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./ztunnel/cmd/ztunnel")
	cmd.Dir = root
	// Static, as the image ships it: no libc mapped into every ztunnel.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ztunnel: %w: %s", err, b)
	}
	return out, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}

// Start builds the topology, the control plane and the node agents, sets
// up the pods, and starts both ztunnels; it returns once both are ready.
// On error it tears down what it started.
func Start(ctx context.Context, opts Options) (_ *Mesh, err error) {
	m := &Mesh{opts: opts, specs: map[string]PodSpec{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Close())
		}
	}()
	var specs []netlab.PodSpec
	for _, p := range opts.Pods {
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		if p.ServiceAccount == "" {
			p.ServiceAccount = p.Name
		}
		m.specs[p.Name] = p
		specs = append(specs, netlab.PodSpec{Name: p.Name, Node: p.Node})
	}
	if opts.Topology != nil {
		m.Topo = opts.Topology
	} else {
		if m.Topo, err = netlab.New(ctx, opts.Prefix, specs); err != nil {
			return nil, err
		}
		m.ownTopo = true
	}
	if m.Authority, err = controlplane.NewAuthority(); err != nil {
		return nil, err
	}
	if m.CP, err = controlplane.New(controlplane.Options{Authority: m.Authority, Token: Token}); err != nil {
		return nil, err
	}
	if opts.CATTL > 0 {
		m.CP.SetCATTL(opts.CATTL)
	}
	if err := m.CP.Start(m.path("istiod.sock")); err != nil {
		return nil, err
	}
	if err := os.WriteFile(m.path("root-cert.pem"), m.Authority.RootPEM(), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(m.path("token"), []byte(Token), 0o600); err != nil {
		return nil, err
	}
	for i := range m.Nodes {
		n := &Node{N: i + 1, NS: m.Topo.Node(i + 1), enrolled: map[string]zds.Workload{},
			ZDSPath: m.path(fmt.Sprintf("node%d-zds.sock", i+1)), LogPath: m.path(fmt.Sprintf("ztunnel-node%d.log", i+1))}
		n.ZDS = &zds.Server{Snapshot: n.snapshot}
		if err := n.serveZDS(); err != nil {
			return nil, err
		}
		m.Nodes[i] = n
	}
	for _, spec := range opts.Pods {
		p := m.Topo.Pod(spec.Name)
		spec = m.specs[spec.Name]
		m.CP.SetWorkload(m.Workload(p.Name))
		if spec.Mesh {
			if err := m.Capture(ctx, p.Name); err != nil {
				return nil, err
			}
			if err := m.Nodes[p.Node-1].add(ctx, m.UID(p.Name), spec, p.NS); err != nil {
				return nil, err
			}
		}
	}
	for _, n := range m.Nodes {
		if err := m.StartZtunnel(ctx, n.N); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Mesh) path(name string) string { return filepath.Join(m.opts.Dir, name) }

// UID is the pod's UID as the node agent knows it.
func (m *Mesh) UID(pod string) string { return "uid-" + pod }

// Spec returns the pod's spec, defaults filled in.
func (m *Mesh) Spec(pod string) PodSpec { return m.specs[pod] }

// Workload is the pod as istiod would describe it.
func (m *Mesh) Workload(pod string) *workloadapi.Workload {
	p, spec := m.Topo.Pod(pod), m.specs[pod]
	w := &workloadapi.Workload{
		Uid:            fmt.Sprintf("Kubernetes//Pod/%s/%s", spec.Namespace, spec.Name),
		Name:           spec.Name,
		Namespace:      spec.Namespace,
		Addresses:      [][]byte{p.IP.AsSlice()},
		ServiceAccount: spec.ServiceAccount,
		TrustDomain:    TrustDomain,
		Node:           fmt.Sprintf("node%d", p.Node),
		WorkloadName:   spec.Name,
		// As istiod derives them from a pod without app or version labels.
		CanonicalName:     spec.Name,
		CanonicalRevision: "latest",
		Status:            workloadapi.WorkloadStatus_HEALTHY,
		ClusterId:         "Kubernetes",
	}
	if spec.Mesh {
		w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	}
	return w
}

// Identity is the pod's SPIFFE ID.
func (m *Mesh) Identity(pod string) string {
	s := m.specs[pod]
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", TrustDomain, s.Namespace, s.ServiceAccount)
}

// IP is the pod's address.
func (m *Mesh) IP(pod string) netip.Addr { return m.Topo.Pod(pod).IP }

// Capture installs the reference in-pod redirection: outbound TCP to
// 15001, inbound TCP except HBONE to 15006, ztunnel's own marked sockets
// and loopback left alone.
func (m *Mesh) Capture(ctx context.Context, pod string) error {
	ns := m.Topo.Pod(pod).NS.Name
	rules := [][]string{
		{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "mark", "--mark", "0x539/0xfff", "-j", "RETURN"},
		{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1/32", "-j", "RETURN"},
		{"-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "15008", "-j", "RETURN"},
	}
	redirect := func(chain, to string, port string) []string {
		r := []string{"-t", "nat", "-A", chain, "-p", "tcp"}
		if port != "" {
			r = append(r, "--dport", port)
		}
		return append(r, "-j", "REDIRECT", "--to-ports", to)
	}
	if len(m.opts.CapturePorts) == 0 {
		rules = append(rules, redirect("OUTPUT", "15001", ""), redirect("PREROUTING", "15006", ""))
	}
	for _, port := range m.opts.CapturePorts {
		p := fmt.Sprint(port)
		rules = append(rules, redirect("OUTPUT", "15001", p), redirect("PREROUTING", "15006", p))
	}
	for _, r := range rules {
		if err := iptables(ctx, ns, r...); err != nil {
			return err
		}
	}
	m.captured = append(m.captured, pod)
	return nil
}

func iptables(ctx context.Context, ns string, rule ...string) error {
	args := append([]string{"netns", "exec", ns, "iptables", "-w"}, rule...)
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", strings.Join(rule, " "), ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// Dial connects from inside a namespace.
func Dial(ctx context.Context, ns netlab.Netns, addr string) (net.Conn, error) {
	h, err := netns.Open(ns.Path())
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var c net.Conn
	err = h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// Listen listens inside a namespace.
func Listen(ns netlab.Netns, addr string) (net.Listener, error) {
	h, err := netns.Open(ns.Path())
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var ln net.Listener
	err = h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	return ln, err
}

// HTTPGet fetches a URL from inside a namespace (a node's ztunnel ports).
func HTTPGet(ctx context.Context, ns netlab.Netns, url string) (int, []byte, error) {
	return httpDo(ctx, ns, http.MethodGet, url)
}

// HTTPPost posts an empty body to a URL from inside a namespace (a node's
// ztunnel admin port, to change its log level for example).
func HTTPPost(ctx context.Context, ns netlab.Netns, url string) (int, []byte, error) {
	return httpDo(ctx, ns, http.MethodPost, url)
}

func httpDo(ctx context.Context, ns netlab.Netns, method, url string) (int, []byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return Dial(ctx, ns, addr) },
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// StartZtunnel starts node n's ztunnel and waits until it is ready.
func (m *Mesh) StartZtunnel(ctx context.Context, n int) error {
	node := m.Nodes[n-1]
	logf, err := os.OpenFile(node.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{
		"--node-name", fmt.Sprintf("node%d", n),
		"--pod-ip", m.nodeIP(n).String(),
		"--xds-address", "unix://" + m.path("istiod.sock"),
		"--root-cert", m.path("root-cert.pem"),
		"--token-path", m.path("token"),
		"--zds-socket", node.ZDSPath,
		"--trust-domain", TrustDomain,
		"--log-format", "text",
		"--termination-drain-duration", "5s",
	}, m.opts.Args...)
	cmd := exec.Command(m.opts.Ztunnel, args...)
	cmd.Env = append(os.Environ(), m.opts.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := netlab.StartInNetns(node.NS.Path(), cmd); err != nil {
		return fmt.Errorf("start ztunnel on node%d: %w", n, err)
	}
	node.mu.Lock()
	node.cmd = cmd
	node.exited = make(chan struct{})
	exited := node.exited
	node.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }()
	return m.WaitReady(ctx, n)
}

func (m *Mesh) nodeIP(n int) netip.Addr {
	if n == 1 {
		return m.Topo.Node1IP
	}
	return m.Topo.Node2IP
}

// Pid is node n's ztunnel process id, 0 if it is not running.
func (m *Mesh) Pid(n int) int {
	node := m.Nodes[n-1]
	node.mu.Lock()
	defer node.mu.Unlock()
	if node.cmd == nil {
		return 0
	}
	return node.cmd.Process.Pid
}

// WaitReady waits until node n's ztunnel answers 200 on /healthz/ready.
func (m *Mesh) WaitReady(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	node := m.Nodes[n-1]
	var last string
	for {
		code, body, err := HTTPGet(ctx, node.NS, "http://127.0.0.1:15021/healthz/ready")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprintf("%d %s %v", code, bytes.TrimSpace(body), err)
		select {
		case <-node.exited:
			return fmt.Errorf("ztunnel on node%d exited; log:\n%s", n, m.Log(n))
		case <-ctx.Done():
			return fmt.Errorf("ztunnel on node%d not ready: %s", n, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Terminate sends SIGTERM to node n's ztunnel, as the kubelet does when it
// stops the pod, and returns a channel closed once the process has exited.
func (m *Mesh) Terminate(n int) (<-chan struct{}, error) {
	node := m.Nodes[n-1]
	node.mu.Lock()
	cmd, exited := node.cmd, node.exited
	node.mu.Unlock()
	if cmd == nil {
		return nil, fmt.Errorf("ztunnel on node%d is not running", n)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	return exited, nil
}

// StopZtunnel sends SIGTERM to node n's ztunnel and waits for it to exit,
// killing it after grace.
func (m *Mesh) StopZtunnel(n int, grace time.Duration) error {
	node := m.Nodes[n-1]
	node.mu.Lock()
	cmd, exited := node.cmd, node.exited
	node.cmd = nil
	node.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("ztunnel on node%d did not exit within %s of SIGTERM", n, grace)
	}
}

// Log returns node n's ztunnel log.
func (m *Mesh) Log(n int) string {
	b, _ := os.ReadFile(m.Nodes[n-1].LogPath)
	return string(b)
}

// ConfigDump returns node n's ztunnel config dump.
func (m *Mesh) ConfigDump(ctx context.Context, n int) (string, error) {
	code, body, err := HTTPGet(ctx, m.Nodes[n-1].NS, "http://127.0.0.1:15000/config_dump")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("config dump: %d %s", code, body)
	}
	return string(body), nil
}

// ControlPlaneSocket is the unix socket the control plane serves on and
// the ztunnels dial; pass it to CP.Start after a CP.Stop.
func (m *Mesh) ControlPlaneSocket() string { return m.path("istiod.sock") }

// Metrics returns node n's ztunnel metrics.
func (m *Mesh) Metrics(ctx context.Context, n int) (string, error) {
	_, body, err := HTTPGet(ctx, m.Nodes[n-1].NS, "http://127.0.0.1:15020/metrics")
	return string(body), err
}

// Diagnose is what a person needs when a test fails: each ztunnel's log
// and config dump, and the control plane's NACKs.
func (m *Mesh) Diagnose(ctx context.Context) string {
	var b strings.Builder
	for _, n := range m.Nodes {
		if n == nil {
			continue
		}
		fmt.Fprintf(&b, "=== ztunnel node%d log\n%s\n", n.N, m.Log(n.N))
		if d, err := m.ConfigDump(ctx, n.N); err == nil {
			fmt.Fprintf(&b, "=== ztunnel node%d config dump\n%s\n", n.N, d)
		} else {
			fmt.Fprintf(&b, "=== ztunnel node%d config dump: %v\n", n.N, err)
		}
	}
	if m.CP != nil {
		fmt.Fprintf(&b, "=== control plane NACKs: %v\n", m.CP.NACKs())
	}
	return b.String()
}

// Enroll hands a pod to its node's ztunnel (after Capture).
func (m *Mesh) Enroll(ctx context.Context, pod string) error {
	p := m.Topo.Pod(pod)
	return m.Nodes[p.Node-1].add(ctx, m.UID(pod), m.specs[pod], p.NS)
}

// Unenroll takes a pod from its node's ztunnel.
func (m *Mesh) Unenroll(ctx context.Context, pod string) error {
	p := m.Topo.Pod(pod)
	n := m.Nodes[p.Node-1]
	uid := m.UID(pod)
	n.mu.Lock()
	w, ok := n.enrolled[uid]
	delete(n.enrolled, uid)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	defer w.Netns.Close()
	return n.ZDS.DelWorkload(ctx, uid)
}

// Close stops everything and deletes the namespaces.
func (m *Mesh) Close() error {
	var errs []error
	for _, n := range m.Nodes {
		if n == nil {
			continue
		}
		if err := m.StopZtunnel(n.N, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
		n.close()
	}
	if m.CP != nil {
		m.CP.Stop()
	}
	if m.Topo != nil && m.ownTopo {
		errs = append(errs, m.Topo.Close())
	} else if m.Topo != nil {
		// The pods outlive the mesh: take the redirection out.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for _, pod := range m.captured {
			errs = append(errs, iptables(ctx, m.Topo.Pod(pod).NS.Name, "-t", "nat", "-F"))
		}
		cancel()
	}
	return errors.Join(errs...)
}

func (n *Node) serveZDS() error {
	ln, err := zds.Listen(n.ZDSPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.zdsStop = cancel
	n.zdsDone = make(chan struct{})
	go func() {
		defer close(n.zdsDone)
		_ = n.ZDS.Serve(ctx, ln)
	}()
	return nil
}

func (n *Node) snapshot(context.Context) ([]zds.Workload, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]zds.Workload, 0, len(n.enrolled))
	for _, w := range n.enrolled {
		out = append(out, w)
	}
	return out, nil
}

// add records the pod for snapshots, then pushes it to a connected
// ztunnel; with none connected, the snapshot carries it.
func (n *Node) add(ctx context.Context, uid string, spec PodSpec, ns netlab.Netns) error {
	f, err := os.Open(ns.Path())
	if err != nil {
		return err
	}
	w := zds.Workload{UID: uid, Netns: f, Info: &zdsapi.WorkloadInfo{Name: spec.Name, Namespace: spec.Namespace, ServiceAccount: spec.ServiceAccount}}
	n.mu.Lock()
	if old, ok := n.enrolled[uid]; ok {
		old.Netns.Close()
	}
	n.enrolled[uid] = w
	n.mu.Unlock()
	if err := n.ZDS.AddWorkload(ctx, w); err != nil && !errors.Is(err, zds.ErrNotConnected) {
		return err
	}
	return nil
}

func (n *Node) close() {
	if n.zdsStop != nil {
		n.zdsStop()
		<-n.zdsDone
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for uid, w := range n.enrolled {
		w.Netns.Close()
		delete(n.enrolled, uid)
	}
}
