package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambient-mesh/mesh/cni/internal/agentapi"
	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/pkg/zds"
	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// podNetns is a named network namespace with a process in it (so /proc
// shows it, as a pod's sandbox does) and an address on its loopback.
type podNetns struct {
	name, ip string
	proc     *exec.Cmd
}

func newPodNetns(t *testing.T, ip string) *podNetns {
	t.Helper()
	p := &podNetns{name: fmt.Sprintf("agent-%d-%s", os.Getpid(), strings.ReplaceAll(ip, ".", "-")), ip: ip}
	run(t, "ip", "netns", "add", p.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.name).Run() })
	run(t, "ip", "-n", p.name, "link", "set", "lo", "up")
	run(t, "ip", "-n", p.name, "addr", "add", ip+"/32", "dev", "lo")
	p.proc = exec.Command("ip", "netns", "exec", p.name, "sleep", "300")
	if err := p.proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.proc.Process.Kill(); _ = p.proc.Wait() })
	return p
}

func (p *podNetns) path() string { return "/run/netns/" + p.name }

func (p *podNetns) inode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p.path(), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// redirected reports whether the nftables mode's table is in the namespace.
func (p *podNetns) redirected(t *testing.T) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", p.name, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	return strings.Contains(string(out), "ambient-mesh")
}

// testWriter sends the agent's log to the test's, shown on failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// fakeZtunnel is ztunnel's end of ZDS: it records the pods it holds, by
// the inode of the namespace it was sent, and acks.
type fakeZtunnel struct {
	mu        sync.Mutex
	pods      map[string]uint64
	snapshots int // SnapshotSent messages received
}

func (z *fakeZtunnel) handle(_ context.Context, req *zdsapi.WorkloadRequest, netns *os.File) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	switch p := req.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_SnapshotSent:
		z.snapshots++
	case *zdsapi.WorkloadRequest_Add:
		var st unix.Stat_t
		if err := unix.Fstat(int(netns.Fd()), &st); err != nil {
			return err
		}
		netns.Close()
		z.pods[p.Add.GetUid()] = st.Ino
	case *zdsapi.WorkloadRequest_Del:
		delete(z.pods, p.Del.GetUid())
	}
	return nil
}

func (z *fakeZtunnel) holds(uid string) (uint64, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	ino, ok := z.pods[uid]
	return ino, ok
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probeSet records the addresses the agent puts in the probe source set.
type probeSet struct {
	mu  sync.Mutex
	ips map[netip.Addr]bool
}

func (p *probeSet) Add(ip netip.Addr) error { p.mu.Lock(); p.ips[ip] = true; p.mu.Unlock(); return nil }
func (p *probeSet) Delete(ip netip.Addr) error {
	p.mu.Lock()
	delete(p.ips, ip)
	p.mu.Unlock()
	return nil
}
func (p *probeSet) has(ip string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ips[netip.MustParseAddr(ip)]
}

type harness struct {
	probes *probeSet
	agent  *Agent
	client *fake.Clientset
	zt     *fakeZtunnel
	sock   string
	ctx    context.Context
}

func newHarness(t *testing.T, objs ...any) *harness {
	t.Helper()
	return newHarnessWith(t, nil, objs...)
}

func newHarnessWith(t *testing.T, configure func(*Config), objs ...any) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and nftables rules")
	}
	client := fake.NewClientset()
	ctx := t.Context()
	for _, o := range objs {
		switch v := o.(type) {
		case *corev1.Namespace:
			if _, err := client.CoreV1().Namespaces().Create(ctx, v, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case *corev1.Pod:
			if _, err := client.CoreV1().Pods(v.Namespace).Create(ctx, v, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	probes := &probeSet{ips: map[netip.Addr]bool{}}
	cfg := Config{
		NodeName: "node1", Client: client, Mode: redirect.NFTables{}, Probes: probes,
		Policy: Policy{ExcludedNamespaces: map[string]bool{"kube-system": true}},
		Log:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if configure != nil {
		configure(&cfg)
	}
	a := New(cfg)
	sock := filepath.Join(t.TempDir(), "ztunnel.sock")
	ln, err := zds.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() { _ = a.ZDS().Serve(ctx, ln) })
	wg.Go(func() {
		if err := a.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "the agent to sync", func() bool { return a.Status(ctx) == nil })
	return &harness{probes: probes, agent: a, client: client, zt: &fakeZtunnel{pods: map[string]uint64{}}, sock: sock, ctx: ctx}
}

// connect runs the fake ztunnel until the returned stop is called.
func (h *harness) connect(t *testing.T) (stop func()) {
	t.Helper()
	h.zt.mu.Lock()
	before := h.zt.snapshots
	h.zt.mu.Unlock()
	ctx, cancel := context.WithCancel(h.ctx)
	c := &zds.Client{Path: h.sock, Handle: h.zt.handle}
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	eventually(t, "ztunnel to connect and get its snapshot", func() bool {
		h.zt.mu.Lock()
		defer h.zt.mu.Unlock()
		return h.zt.snapshots > before
	})
	return func() { cancel(); <-done }
}

func namespace(name string, ambient bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if ambient {
		ns.Labels[LabelDataplaneMode] = ModeAmbient
	}
	return ns
}

func pod(ns, name, uid, ip string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: "node1", ServiceAccountName: "sa-" + name},
	}
	if ip != "" {
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	}
	return p
}

func (h *harness) annotation(t *testing.T, ns, name string) string {
	t.Helper()
	p, err := h.client.CoreV1().Pods(ns).Get(h.ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Annotations[AnnotationRedirect]
}

// TestSandboxEnrollment follows the plugin's ADD: an enrolled pod is
// redirected and held by ztunnel before ADD returns, with its own network
// namespace; a pod outside the mesh is passed through; with no ztunnel,
// ADD fails rather than start the pod uncaptured.
func TestSandboxEnrollment(t *testing.T) {
	web := newPodNetns(t, "10.251.0.7")
	other := newPodNetns(t, "10.251.0.8")
	h := newHarness(t, namespace("apps", true), namespace("plain", false),
		pod("apps", "web", "uid-web", ""), pod("plain", "db", "uid-db", ""))

	add := func(ns, name string, p *podNetns) (agentapi.AddResult, error) {
		return h.agent.PodAdded(h.ctx, agentapi.PodAdded{Netns: p.path(), PodNamespace: ns, PodName: name,
			IPs: []agentapi.IPConfig{{Address: p.ip + "/32"}}})
	}
	if _, err := add("apps", "web", web); err == nil || !strings.Contains(err.Error(), "ztunnel is not connected") {
		t.Fatalf("ADD without ztunnel: %v, want a refusal naming ztunnel", err)
	}

	stop := h.connect(t)
	defer func() { stop() }() // the connection current at the end
	res, err := add("apps", "web", web)
	if err != nil || !res.Enrolled {
		t.Fatalf("ADD: %+v, %v", res, err)
	}
	if ino, ok := h.zt.holds("uid-web"); !ok || ino != web.inode(t) {
		t.Fatalf("ztunnel holds uid-web with netns inode %d (%v), want %d", ino, ok, web.inode(t))
	}
	if !web.redirected(t) {
		t.Error("the enrolled pod's namespace has no redirection")
	}
	eventually(t, "the redirection annotation", func() bool { return h.annotation(t, "apps", "web") == RedirectionEnabled })
	if !h.probes.has(web.ip) {
		t.Error("the enrolled pod's address is not in the probe source set")
	}

	res, err = add("plain", "db", other)
	if err != nil || res.Enrolled || res.Reason == "" {
		t.Fatalf("ADD outside the mesh: %+v, %v", res, err)
	}
	if _, ok := h.zt.holds("uid-db"); ok || other.redirected(t) {
		t.Error("a pod outside the mesh was captured")
	}

	// A reconnecting ztunnel gets the enrolled pods in its snapshot.
	stop()
	h.zt.mu.Lock()
	h.zt.pods = map[string]uint64{}
	h.zt.mu.Unlock()
	stop = h.connect(t)
	eventually(t, "the snapshot after a reconnect", func() bool { _, ok := h.zt.holds("uid-web"); return ok })

	if err := h.agent.PodDeleted(h.ctx, agentapi.PodDeleted{PodNamespace: "apps", PodName: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.zt.holds("uid-web"); ok {
		t.Error("ztunnel still holds a deleted pod")
	}
	if h.probes.has(web.ip) {
		t.Error("a deleted pod's address stayed in the probe source set")
	}
}

// TestLiveEnrollment labels the namespace of a running pod: the agent
// finds the pod's namespace by its IP and captures it in place; removing
// the label releases it and takes the redirection out.
func TestLiveEnrollment(t *testing.T) {
	api := newPodNetns(t, "10.251.0.9")
	h := newHarness(t, namespace("live", false), pod("live", "api", "uid-api", api.ip))
	stop := h.connect(t)
	defer stop()

	if _, ok := h.zt.holds("uid-api"); ok {
		t.Fatal("captured before the label")
	}
	label := func(v string) {
		ns, err := h.client.CoreV1().Namespaces().Get(h.ctx, "live", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if v == "" {
			delete(ns.Labels, LabelDataplaneMode)
		} else {
			ns.Labels[LabelDataplaneMode] = v
		}
		if _, err := h.client.CoreV1().Namespaces().Update(h.ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	label(ModeAmbient)
	eventually(t, "the running pod captured", func() bool {
		ino, ok := h.zt.holds("uid-api")
		return ok && ino == api.inode(t)
	})
	if !api.redirected(t) {
		t.Error("no redirection in the running pod")
	}
	eventually(t, "the annotation", func() bool { return h.annotation(t, "live", "api") == RedirectionEnabled })

	label("")
	eventually(t, "the pod released", func() bool { _, ok := h.zt.holds("uid-api"); return !ok })
	eventually(t, "the redirection removed", func() bool { return !api.redirected(t) })
	eventually(t, "the annotation removed", func() bool { return h.annotation(t, "live", "api") == "" })
	if h.probes.has(api.ip) {
		t.Error("a released pod's address stayed in the probe source set")
	}
}

// TestRestartKeepsPods starts the agent with an enrolled pod already
// running, as after an agent restart: the pod is found and recorded before
// any snapshot, so the ztunnel that reconnects is sent it and keeps it.
func TestRestartKeepsPods(t *testing.T) {
	api := newPodNetns(t, "10.251.0.10")
	h := newHarness(t, namespace("kept", true), pod("kept", "api", "uid-kept", api.ip))
	if !api.redirected(t) {
		t.Error("the running enrolled pod's redirection was not applied at start")
	}
	stop := h.connect(t)
	defer stop()
	h.zt.mu.Lock()
	ino, ok := h.zt.pods["uid-kept"]
	h.zt.mu.Unlock()
	if !ok || ino != api.inode(t) {
		t.Fatalf("ztunnel's first snapshot holds uid-kept: %v (inode %d, want %d)", ok, ino, api.inode(t))
	}
}

// TestRepairModes: with repair by label or by deletion, a running pod
// that should be in the mesh is labelled or deleted instead of captured in
// place.
func TestRepairModes(t *testing.T) {
	for _, mode := range []string{RepairLabel, RepairDelete} {
		t.Run(mode, func(t *testing.T) {
			h := newHarnessWith(t, func(c *Config) { c.Repair = mode }, namespace("rep", true), pod("rep", "old", "uid-old", "10.251.0.11"))
			pods := h.client.CoreV1().Pods("rep")
			switch mode {
			case RepairLabel:
				eventually(t, "the repair label", func() bool {
					p, err := pods.Get(h.ctx, "old", metav1.GetOptions{})
					return err == nil && p.Labels[LabelUninitialized] == "true"
				})
			case RepairDelete:
				eventually(t, "the pod deleted", func() bool {
					_, err := pods.Get(h.ctx, "old", metav1.GetOptions{})
					return err != nil
				})
			}
			if h.agent.isEnrolled("uid-old") {
				t.Error("the pod was captured in place")
			}
		})
	}
}

// TestRestartWithRepairKeepsCapturedPods: an agent restarting in a repair
// mode that labels or deletes uncaptured pods must not take the pods it
// captured before for such pods; each is found once.
func TestRestartWithRepairKeepsCapturedPods(t *testing.T) {
	for _, mode := range []string{RepairLabel, RepairDelete} {
		t.Run(mode, func(t *testing.T) {
			api := newPodNetns(t, "10.251.0.12")
			captured := pod("kept2", "api", "uid-kept2", api.ip)
			captured.Annotations = map[string]string{AnnotationRedirect: RedirectionEnabled}
			var finds atomic.Int32
			h := newHarnessWith(t, func(c *Config) {
				c.Repair = mode
				c.FindNetns = func(ctx context.Context, p *corev1.Pod) (*os.File, error) {
					finds.Add(1)
					return ScanProc(ctx, p)
				}
			}, namespace("kept2", true), captured)
			stop := h.connect(t)
			defer stop()
			if _, ok := h.zt.holds("uid-kept2"); !ok {
				t.Fatal("the captured pod is not in ztunnel's first snapshot")
			}
			// Let the reconcile loop see the pod, then check it left it alone.
			eventually(t, "the queue to drain", func() bool { return h.agent.queue.Len() == 0 })
			p, err := h.client.CoreV1().Pods("kept2").Get(h.ctx, "api", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the captured pod is gone: %v", err)
			}
			if p.Labels[LabelUninitialized] != "" {
				t.Error("the captured pod was labelled for repair")
			}
			if n := finds.Load(); n != 1 {
				t.Errorf("the pod's namespace was looked for %d times, want 1", n)
			}
		})
	}
}
