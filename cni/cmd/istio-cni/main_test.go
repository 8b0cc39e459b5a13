package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ambient-mesh/mesh/cni/internal/agentapi"
)

// pluginBin is the plugin, built once, run the way a runtime runs it.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "istio-cni-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "istio-cni")
	out, err := exec.Command("go", "build", "-o", pluginBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build plugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stubAgent is a node agent on a real unix socket that records what the
// plugin tells it.
type stubAgent struct {
	runDir string

	mu       sync.Mutex
	added    []agentapi.PodAdded
	deleted  []agentapi.PodDeleted
	notReady error
}

func (a *stubAgent) PodAdded(_ context.Context, req agentapi.PodAdded) (agentapi.AddResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.added = append(a.added, req)
	if req.PodName == "broken" {
		return agentapi.AddResult{}, errors.New("ztunnel did not ack the pod")
	}
	return agentapi.AddResult{Enrolled: true}, nil
}

func (a *stubAgent) PodDeleted(_ context.Context, req agentapi.PodDeleted) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deleted = append(a.deleted, req)
	return nil
}

func (a *stubAgent) Status(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.notReady
}

func (a *stubAgent) calls() ([]agentapi.PodAdded, []agentapi.PodDeleted) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]agentapi.PodAdded(nil), a.added...), append([]agentapi.PodDeleted(nil), a.deleted...)
}

func (a *stubAgent) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.added, a.deleted, a.notReady = nil, nil, nil
}

func (a *stubAgent) setNotReady(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.notReady = err
}

// shortTempDir keeps socket paths under the unix limit.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startAgent(t *testing.T) *stubAgent {
	t.Helper()
	a := &stubAgent{runDir: filepath.Join(shortTempDir(t), "run")}
	ln, err := agentapi.Listen(agentapi.SocketPath(a.runDir))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: agentapi.Handler(a)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return a
}

// testNetns adds a named network namespace with ip(8), as the runtime's
// sandbox would have, and returns its path.
func testNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (ip netns add)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) from iproute2")
	}
	name := fmt.Sprintf("cnitest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return "/var/run/netns/" + name
}

type invocation struct {
	command string
	netns   string
	args    string
	conf    []byte
}

type outcome struct {
	ok     bool
	stdout []byte
	stderr string
}

func run(t *testing.T, inv invocation) outcome {
	t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{
		"CNI_COMMAND=" + inv.command,
		"CNI_CONTAINERID=0123456789abcdef",
		"CNI_NETNS=" + inv.netns,
		"CNI_IFNAME=eth0",
		"CNI_ARGS=" + inv.args,
		"CNI_PATH=" + filepath.Dir(pluginBin),
	}
	cmd.Stdin = bytes.NewReader(inv.conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run plugin: %v", err)
	}
	return outcome{ok: err == nil, stdout: stdout.Bytes(), stderr: stderr.String()}
}

// cniError parses the error a failed plugin prints on stdout.
func cniError(t *testing.T, o outcome) types.Error {
	t.Helper()
	if o.ok {
		t.Fatalf("plugin succeeded, want an error; stdout %s", o.stdout)
	}
	var e types.Error
	if err := json.Unmarshal(o.stdout, &e); err != nil || e.Msg == "" {
		t.Fatalf("stdout is not a CNI error: %q (%v); stderr %s", o.stdout, err, o.stderr)
	}
	return e
}

func podArgs(ns, name string) string {
	return fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=uid-%s", ns, name, name)
}

// hasPrevResult: chained configs, and so prevResult, start at 0.3.0.
func hasPrevResult(v string) bool {
	ok, _ := version.GreaterThanOrEqualTo(v, "0.3.0")
	return ok
}

func atLeast(v, min string) bool {
	ok, _ := version.GreaterThanOrEqualTo(v, min)
	return ok
}

// prevResult is what an earlier plugin (a bridge, say) returned, in version v.
func prevResult(t *testing.T, v, netns string) (map[string]any, types.Result) {
	t.Helper()
	idx := 0
	addr, _ := types.ParseCIDR("10.244.1.7/24")
	gw := net.ParseIP("10.244.1.1")
	_, dst, _ := net.ParseCIDR("0.0.0.0/0")
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "eth0", Mac: "0a:58:0a:f4:01:07", Sandbox: netns}},
		IPs:        []*current.IPConfig{{Interface: &idx, Address: *addr, Gateway: gw}},
		Routes:     []*types.Route{{Dst: *dst, GW: gw}},
		DNS:        types.DNS{Nameservers: []string{"10.96.0.10"}, Search: []string{"svc.cluster.local"}},
	}
	res, err := r.GetAsVersion(v)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := res.PrintTo(&buf); err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	return m, res
}

func netConf(t *testing.T, v, runDir string, prev map[string]any) []byte {
	t.Helper()
	c := map[string]any{
		"cniVersion":         v,
		"name":               "k8s-pod-network",
		"type":               "istio-cni",
		"cni_agent_run_dir":  runDir,
		"exclude_namespaces": []string{"skipped"},
		"agent_timeout":      "10s",
		"plugin_log_level":   "debug",
	}
	if prev != nil {
		c["prevResult"] = prev
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameResult compares two results after a round trip through version v.
func sameResult(t *testing.T, v string, got []byte, want types.Result) {
	t.Helper()
	g, err := version.NewResult(v, got)
	if err != nil {
		t.Fatalf("output is not a %s result: %v: %s", v, err, got)
	}
	var a, b bytes.Buffer
	_ = g.PrintTo(&a)
	_ = want.PrintTo(&b)
	if a.String() != b.String() {
		t.Errorf("result not passed through:\n got %s\nwant %s", a.String(), b.String())
	}
}

func TestPluginEverySpecVersion(t *testing.T) {
	netns := testNetns(t)
	agent := startAgent(t)
	deadRunDir := filepath.Join(shortTempDir(t), "nobody-home")

	for _, v := range version.All.SupportedVersions() {
		t.Run(v, func(t *testing.T) {
			var prev map[string]any
			var want types.Result
			if hasPrevResult(v) {
				prev, want = prevResult(t, v, netns)
			}
			conf := netConf(t, v, agent.runDir, prev)
			deadConf := netConf(t, v, deadRunDir, prev)

			t.Run("ADD enrolls through the agent", func(t *testing.T) {
				agent.reset()
				o := run(t, invocation{command: "ADD", netns: netns, args: podArgs("demo", "web-1"), conf: conf})
				if !o.ok {
					t.Fatalf("ADD failed: %s %s", o.stdout, o.stderr)
				}
				if want != nil {
					sameResult(t, v, o.stdout, want)
				} else if _, err := version.NewResult(v, o.stdout); err != nil {
					t.Errorf("ADD output is not a %s result: %v: %s", v, err, o.stdout)
				}
				added, _ := agent.calls()
				if len(added) != 1 {
					t.Fatalf("agent got %d adds, want 1", len(added))
				}
				got := added[0]
				if got.PodName != "web-1" || got.PodNamespace != "demo" || got.PodUID != "uid-web-1" ||
					got.Netns != netns || got.ContainerID != "0123456789abcdef" || got.IfName != "eth0" {
					t.Errorf("agent got %+v", got)
				}
				if want != nil && (len(got.IPs) != 1 || got.IPs[0].Address != "10.244.1.7/24" || got.IPs[0].Gateway != "10.244.1.1") {
					t.Errorf("agent got addresses %+v", got.IPs)
				}
			})

			t.Run("ADD skips excluded namespaces without a call", func(t *testing.T) {
				agent.reset()
				for _, ns := range []string{"skipped", "kube-system"} {
					// Even with the agent away: excluded pods never depend on it.
					o := run(t, invocation{command: "ADD", netns: netns, args: podArgs(ns, "dns-1"), conf: deadConf})
					if !o.ok {
						t.Fatalf("ADD in %s failed: %s %s", ns, o.stdout, o.stderr)
					}
					if want != nil {
						sameResult(t, v, o.stdout, want)
					}
				}
				if added, _ := agent.calls(); len(added) != 0 {
					t.Errorf("agent called for excluded pods: %+v", added)
				}
			})

			t.Run("ADD passes non-pods through", func(t *testing.T) {
				o := run(t, invocation{command: "ADD", netns: netns, args: "", conf: deadConf})
				if !o.ok {
					t.Fatalf("ADD failed: %s %s", o.stdout, o.stderr)
				}
			})

			t.Run("ADD fails closed when the agent is away", func(t *testing.T) {
				o := run(t, invocation{command: "ADD", netns: netns, args: podArgs("demo", "web-2"), conf: deadConf})
				e := cniError(t, o)
				if e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, agentapi.SocketPath(deadRunDir)) ||
					!strings.Contains(e.Msg, "demo/web-2") || !strings.Contains(e.Msg, "unreachable") {
					t.Errorf("error %+v, want code %d naming the socket and the pod", e, types.ErrTryAgainLater)
				}
			})

			t.Run("ADD fails when the agent answers an error", func(t *testing.T) {
				o := run(t, invocation{command: "ADD", netns: netns, args: podArgs("demo", "broken"), conf: conf})
				e := cniError(t, o)
				if !strings.Contains(e.Msg, "ztunnel did not ack the pod") || !strings.Contains(e.Msg, "demo/broken") {
					t.Errorf("error %+v does not carry the agent's reason", e)
				}
			})

			t.Run("ADD rejects a bad config", func(t *testing.T) {
				bad := bytes.Replace(conf, []byte(`"agent_timeout":"10s"`), []byte(`"agent_timeout":"later"`), 1)
				e := cniError(t, run(t, invocation{command: "ADD", netns: netns, args: podArgs("demo", "web-3"), conf: bad}))
				if !strings.Contains(e.Msg, "agent_timeout") {
					t.Errorf("error %+v does not name the field", e)
				}
			})

			t.Run("CHECK", func(t *testing.T) {
				o := run(t, invocation{command: "CHECK", netns: netns, args: podArgs("demo", "web-1"), conf: conf})
				if !atLeast(v, "0.4.0") {
					if e := cniError(t, o); e.Code != types.ErrIncompatibleCNIVersion {
						t.Errorf("CHECK on %s: %+v, want incompatible version", v, e)
					}
					return
				}
				if !o.ok {
					t.Fatalf("CHECK failed: %s %s", o.stdout, o.stderr)
				}
				noPrev := netConf(t, v, agent.runDir, nil)
				cniError(t, run(t, invocation{command: "CHECK", netns: netns, args: podArgs("demo", "web-1"), conf: noPrev}))
			})

			t.Run("DEL tells the agent", func(t *testing.T) {
				agent.reset()
				o := run(t, invocation{command: "DEL", netns: netns, args: podArgs("demo", "web-1"), conf: conf})
				if !o.ok {
					t.Fatalf("DEL failed: %s %s", o.stdout, o.stderr)
				}
				_, deleted := agent.calls()
				if len(deleted) != 1 || deleted[0].PodName != "web-1" || deleted[0].PodNamespace != "demo" || deleted[0].Netns != netns {
					t.Errorf("agent got deletes %+v", deleted)
				}
			})

			t.Run("DEL succeeds with the agent away", func(t *testing.T) {
				// The sandbox may already be gone, too: no netns.
				for _, ns := range []string{netns, ""} {
					o := run(t, invocation{command: "DEL", netns: ns, args: podArgs("demo", "web-1"), conf: deadConf})
					if !o.ok {
						t.Fatalf("DEL (netns %q) failed: %s %s", ns, o.stdout, o.stderr)
					}
				}
			})

			t.Run("STATUS", func(t *testing.T) {
				agent.reset()
				o := run(t, invocation{command: "STATUS", conf: conf})
				if !atLeast(v, "1.1.0") {
					if e := cniError(t, o); e.Code != types.ErrIncompatibleCNIVersion {
						t.Errorf("STATUS on %s: %+v, want incompatible version", v, e)
					}
					return
				}
				if !o.ok {
					t.Fatalf("STATUS with a ready agent failed: %s %s", o.stdout, o.stderr)
				}
				agent.setNotReady(errors.New("ztunnel not connected"))
				if e := cniError(t, run(t, invocation{command: "STATUS", conf: conf})); e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, "ztunnel not connected") {
					t.Errorf("STATUS with an unready agent: %+v", e)
				}
				if e := cniError(t, run(t, invocation{command: "STATUS", conf: deadConf})); e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, agentapi.SocketPath(deadRunDir)) {
					t.Errorf("STATUS with the agent away: %+v", e)
				}
			})
		})
	}
}

func TestVersion(t *testing.T) {
	o := run(t, invocation{command: "VERSION", conf: []byte(`{"cniVersion": "1.1.0"}`)})
	if !o.ok {
		t.Fatalf("VERSION failed: %s", o.stdout)
	}
	var info struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(o.stdout, &info); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(info.Supported, ","), strings.Join(version.All.SupportedVersions(), ","); got != want {
		t.Errorf("supported versions %s, want %s", got, want)
	}
}
