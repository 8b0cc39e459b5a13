//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
	"github.com/ambient-mesh/mesh/tests/framework"
)

// TestL4Mesh is the user's day 1, on the local cluster: the mesh installed
// with the helm CLI as docs/install.md says, a namespace labelled ambient,
// and its traffic mutually authenticated and encrypted between nodes,
// counted in ztunnel's metrics, and governed by PeerAuthentication and
// AuthorizationPolicy, with no change to the apps; then the same with
// `istioctl install`.
func TestL4Mesh(t *testing.T) {
	c := framework.Get(t)
	mesh := c.InstallMesh(t, framework.MeshOptions{})
	app := c.NewNamespace(t, "l4", nil)
	outside := c.NewNamespace(t, "outside", nil)
	ctx := t.Context()

	app.Apply(t, c.EchoServer("server", "v1", 2))
	app.Apply(t, c.EchoClient("client", "client"))
	app.Apply(t, c.EchoClient("other", "other"))
	outside.Apply(t, c.EchoClient("outsider", "outsider"))
	for _, d := range []string{"server", "client", "other"} {
		app.WaitRollout(t, "deployment/"+d, 3*time.Minute)
	}
	outside.WaitRollout(t, "deployment/outsider", 3*time.Minute)
	app.WaitEndpoints(t, "server", 2, time.Minute)

	l := &l4{t: t, c: c, mesh: mesh, app: app}
	client := app.Pods(t, "app=client")[0]
	other := app.Pods(t, "app=other")[0].Name
	outsider := outside.Pods(t, "app=outsider")[0].Name
	// The server replica on another node than the client's: traffic to it
	// crosses the underlay.
	var remote corev1.Pod
	for _, p := range app.Pods(t, "app=server") {
		if p.Spec.NodeName != client.Spec.NodeName {
			remote = p
		}
	}
	if remote.Name == "" {
		t.Fatalf("no server replica on a node other than the client's (%s)\n%s", client.Spec.NodeName, app.Dump())
	}
	url := "http://server." + app.Name + ".svc.cluster.local/"
	id := func(sa string) string { return "spiffe://cluster.local/ns/" + app.Name + "/sa/" + sa }

	waitUntil(t, "the server reachable before enrollment", time.Minute, func() bool {
		return app.Send(t, client.Name, url, 3).OK == 3
	}, l.diagnose)
	before := map[string]corev1.Pod{}
	for _, p := range app.Pods(t, "") {
		before[p.Name] = p
	}

	t.Run("labelling captures the running pods without restarting them", func(t *testing.T) {
		l.label(ctx, app.Name, `"ambient"`)
		waitUntil(t, "every pod annotated as captured", 90*time.Second, l.annotated(true), l.diagnose)
		for _, p := range app.Pods(t, "") {
			b, ok := before[p.Name]
			if !ok {
				t.Errorf("pod %s is new: labelling replaced a pod", p.Name)
				continue
			}
			if restarts(p) != restarts(b) {
				t.Errorf("pod %s restarted when captured: %d restarts, had %d", p.Name, restarts(p), restarts(b))
			}
		}
		s := app.Send(t, client.Name, url, 20)
		if s.OK != 20 {
			t.Fatalf("%d of 20 requests by service name ok: %v\n%s", s.OK, s.ErrorSamples, l.diagnose())
		}
		if s.ByPod[remote.Name] == 0 {
			t.Errorf("none of 20 requests reached %s, the replica on the other node: %v", remote.Name, s.ByPod)
		}
		// The server's ztunnel received them as HBONE over mutual TLS, and
		// counted them with the labels Istio's dashboards group by: the
		// canonical service and revision istiod derives from the pods'
		// app and version labels, and the service.
		l.waitMetric(t, remote.Spec.NodeName, "an inbound mutual TLS connection from the client", map[string]string{
			"reporter": "destination", "source_principal": id("client"), "destination_principal": id("default"),
			"connection_security_policy": "mutual_tls", "response_flags": "-",
			"source_canonical_service": "client", "destination_canonical_service": "server", "destination_canonical_revision": "v1",
			"destination_app": "server", "destination_version": "v1", "destination_cluster": "Kubernetes",
			"destination_service": "server." + app.Name + ".svc.cluster.local", "destination_service_name": "server",
			"destination_service_namespace": app.Name,
		})
		l.waitMetric(t, client.Spec.NodeName, "an outbound connection to the service counted by the client's ztunnel", map[string]string{
			"reporter": "source", "source_canonical_service": "client", "destination_canonical_service": "server",
			"destination_service_name": "server", "destination_service_namespace": app.Name,
		})
	})

	t.Run("between nodes the wire carries TLS to 15008, never the payload", func(t *testing.T) {
		marker := "l4-payload-" + randomHex(8)
		capture := c.CaptureUnderlay(t, client.Spec.NodeName, "tcp")
		direct := fmt.Sprintf("http://%s:8080/%s", remote.Status.PodIP, marker)
		if s := app.Send(t, client.Name, direct, 5); s.OK != 5 {
			t.Fatalf("%d of 5 requests to %s ok: %v\n%s", s.OK, remote.Name, s.ErrorSamples, l.diagnose())
		}
		pcap := capture.Stop()
		if bytes.Contains(pcap, []byte(marker)) {
			t.Errorf("the payload %q crossed the underlay in clear", marker)
		}
		// Segments to 15008 that start a TLS record: handshakes (0x16) only
		// if ztunnel opened a new connection meanwhile (it pools them per
		// peer), application data (0x17) always.
		hs := packets(t, pcap, "tcp dst port 15008 and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16")
		data := packets(t, pcap, "tcp dst port 15008 and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x17")
		plain := packets(t, pcap, "tcp port 8080")
		if data == 0 {
			t.Errorf("the capture has no TLS application data record to port 15008")
		}
		if plain != 0 {
			t.Errorf("the capture has %d packets to or from the app's port 8080", plain)
		}
		t.Logf("underlay capture: %d bytes; TLS to 15008: %d handshake, %d data packets; to 8080: %d", len(pcap), hs, data, plain)
	})

	t.Run("PERMISSIVE admits plaintext from outside the mesh, STRICT refuses it", func(t *testing.T) {
		if s := outside.Send(t, outsider, url, 3); s.OK != 3 {
			t.Fatalf("under PERMISSIVE, %d of 3 requests from outside the mesh ok: %v\n%s", s.OK, s.ErrorSamples, l.diagnose())
		}
		app.Apply(t, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict}\nspec:\n  mtls: {mode: STRICT}\n")
		t.Cleanup(func() { l.delete(context.Background(), "peerauthentication", "strict") })
		waitUntil(t, "plaintext from outside the mesh refused", time.Minute, func() bool {
			return outside.Send(t, outsider, url, 3, "--timeout", "2s").OK == 0
		}, l.diagnose)
		if s := app.Send(t, client.Name, url, 5); s.OK != 5 {
			t.Errorf("under STRICT, %d of 5 requests from inside the mesh ok: %v", s.OK, s.ErrorSamples)
		}
		l.delete(ctx, "peerauthentication", "strict")
		waitUntil(t, "plaintext admitted again once the policy is gone", time.Minute, func() bool {
			return outside.Send(t, outsider, url, 3).OK == 3
		}, l.diagnose)
	})

	t.Run("an L4 AuthorizationPolicy admits one service account and refuses another", func(t *testing.T) {
		app.Apply(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client}
spec:
  selector:
    matchLabels: {app: server}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/%s/sa/client]
`, app.Name))
		t.Cleanup(func() { l.delete(context.Background(), "authorizationpolicy", "only-client") })
		waitUntil(t, "the other service account refused", time.Minute, func() bool {
			return app.Send(t, other, url, 3, "--timeout", "2s").OK == 0
		}, l.diagnose)
		if s := app.Send(t, client.Name, url, 5); s.OK != 5 {
			t.Errorf("the allowed client: %d of 5 requests ok: %v\n%s", s.OK, s.ErrorSamples, l.diagnose())
		}
		l.waitMetric(t, "", "the refusal counted with response_flags DENY", map[string]string{
			"reporter": "destination", "source_principal": id("other"), "response_flags": "DENY",
		})
		waitUntil(t, "the refusal in ztunnel's access log", 30*time.Second, func() bool {
			return ztunnelLogged(t, mesh, `"connection refused"`, `"src_identity":"`+id("other")+`"`, `"response_flags":"DENY"`)
		}, l.diagnose)
		l.delete(ctx, "authorizationpolicy", "only-client")
		waitUntil(t, "the other service account admitted once the policy is gone", time.Minute, func() bool {
			return app.Send(t, other, url, 3).OK == 3
		}, l.diagnose)
	})

	t.Run("a dry-run DENY is logged by ztunnel and enforces nothing", func(t *testing.T) {
		app.Apply(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: trial-deny-other
  annotations: {istio.io/dry-run: "true"}
spec:
  selector:
    matchLabels: {app: server}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/%s/sa/other]
`, app.Name))
		t.Cleanup(func() { l.delete(context.Background(), "authorizationpolicy", "trial-deny-other") })
		// Each round sends from the denied service account, which must get
		// through, and looks for ztunnel's account of what enforcing the
		// policy would have done.
		waitUntil(t, "the dry-run outcome in ztunnel's access log", time.Minute, func() bool {
			if s := app.Send(t, other, url, 1); s.OK != 1 {
				t.Fatalf("a dry-run policy refused a request: %v\n%s", s.ErrorSamples, l.diagnose())
			}
			return ztunnelLogged(t, mesh, `"connection complete"`, `"src_identity":"`+id("other")+`"`,
				`"dry_run_result":"deny"`, `"dry_run_policy":"`+app.Name+`/trial-deny-other"`)
		}, l.diagnose)
		if s := app.Send(t, other, url, 5); s.OK != 5 {
			t.Errorf("with the dry-run DENY in place: %d of 5 requests ok: %v\n%s", s.OK, s.ErrorSamples, l.diagnose())
		}
	})

	t.Run("a ztunnel upgrade drops no new connection", func(t *testing.T) {
		// The client opens a new connection per request all through a
		// rolling restart of ztunnel, in batches until the rollout is over:
		// on each node the new ztunnel is ready beside the old one
		// (maxSurge 1) before the old one drains.
		type result struct {
			total, ok int
			samples   []string
			err       error
		}
		stop := make(chan struct{})
		// On every way out, a failed rollout included.
		halt := sync.OnceFunc(func() { close(stop) })
		defer halt()
		done := make(chan result, 1)
		go func() {
			var r result
			defer func() { done <- r }()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				out, err := app.Exec(ctx, client.Name, "", "/usr/local/bin/echo", "client", "--url", url, "--count", "300", "--timeout", "2s")
				cancel()
				var s echo.Summary
				if jerr := json.Unmarshal([]byte(out), &s); jerr != nil {
					r.err = fmt.Errorf("%v (output %.500q)", err, out)
					return
				}
				r.total += s.Total
				r.ok += s.OK
				r.samples = append(r.samples, s.ErrorSamples...)
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		// The ztunnels being replaced, followed until they exit: they are
		// gone by the time a failure is diagnosed, and their logs say what
		// became of a connection they took.
		old := followLogs(c, mesh.Pods(t, "ztunnel"))
		defer old.stop()
		start := time.Now()
		if _, err := c.Kubectl(ctx, "", "rollout", "restart", "-n", framework.IstioNamespace, "daemonset/ztunnel"); err != nil {
			t.Fatal(err)
		}
		mesh.Namespace.WaitRollout(t, "daemonset/ztunnel", 2*time.Minute)
		rolled := time.Since(start)
		halt()
		r := <-done
		if r.err != nil {
			t.Fatalf("the echo client gave no summary, its requests failing or hanging while ztunnel rolled out: %v\n%s", r.err, l.diagnose())
		}
		if r.ok != r.total {
			t.Errorf("%d of %d requests failed while ztunnel rolled out: %v\n%s\n%s", r.total-r.ok, r.total, r.samples, old.report(), l.diagnose())
		}
		t.Logf("%d requests during a %s ztunnel rollout, %d failed", r.total, rolled.Round(time.Millisecond), r.total-r.ok)
	})

	t.Run("removing the label restores plain traffic", func(t *testing.T) {
		l.label(ctx, app.Name, "null")
		waitUntil(t, "every pod released", 90*time.Second, l.annotated(false), l.diagnose)
		marker := "l4-plain-" + randomHex(8)
		capture := c.CaptureUnderlay(t, client.Spec.NodeName, "tcp")
		direct := fmt.Sprintf("http://%s:8080/%s", remote.Status.PodIP, marker)
		s := app.Send(t, client.Name, direct, 3)
		pcap := capture.Stop()
		if s.OK != 3 {
			t.Fatalf("%d of 3 plain requests ok: %v\n%s", s.OK, s.ErrorSamples, l.diagnose())
		}
		if !bytes.Contains(pcap, []byte(marker)) {
			t.Errorf("the released client's payload %q is not on the wire: is it still tunnelled?", marker)
		}
		if n := packets(t, pcap, "tcp port 15008"); n != 0 {
			t.Errorf("%d packets to or from 15008 after release", n)
		}
		if s.First != nil && !strings.HasPrefix(s.First.ClientAddr, client.Status.PodIP+":") {
			t.Errorf("the server saw the client as %s, want its pod IP %s", s.First.ClientAddr, client.Status.PodIP)
		}
	})

	t.Run("istioctl install gives the same mesh", func(t *testing.T) {
		istioctl := buildCommand(t, "istioctl", "github.com/ambient-mesh/mesh/istioctl/cmd/istioctl")
		try := func(timeout time.Duration, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, istioctl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return string(out), fmt.Errorf("istioctl %s: %w\n%s", strings.Join(args, " "), err, out)
			}
			return string(out), nil
		}
		run := func(timeout time.Duration, args ...string) string {
			t.Helper()
			out, err := try(timeout, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, l.diagnose())
			}
			return out
		}
		// Whatever happens below: istioctl uninstall (checked to leave no
		// node's CNI config naming the plugin), then istio-base again for
		// the suites that follow.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, istioctl, "--kubeconfig", c.Kubeconfig, "uninstall", "-y").CombinedOutput()
			if err != nil {
				t.Errorf("istioctl uninstall: %v\n%s", err, out)
			}
			if err := c.UninstallMesh(ctx); err != nil {
				t.Errorf("after istioctl uninstall: %v", err)
			}
			if err := c.HelmInstall(ctx, framework.Releases[0], framework.MeshOptions{}); err != nil {
				t.Errorf("reinstall istio-base: %v", err)
			}
		})
		// A cluster without the mesh: the Helm releases gone, base too
		// (its CRDs stay, as they do for a user).
		mesh.Remove(t)
		if _, err := c.Helm(ctx, "uninstall", "istio-base", "-n", framework.IstioNamespace, "--wait"); err != nil {
			t.Fatal(err)
		}
		hub, tag := env("HUB", "localhost/mesh"), env("TAG", "dev")
		out := run(8*time.Minute, "install", "-y", "--set", "profile=ambient", "--set", "hub="+hub, "--set", "tag="+tag)
		t.Logf("istioctl install:\n%s", out)
		list, err := c.Helm(ctx, "list", "-n", framework.IstioNamespace, "--deployed", "-q")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range framework.Releases {
			if !regexp.MustCompile(`(?m)^` + r.Name + `$`).MatchString(list) {
				t.Errorf("helm list shows no deployed release %s after istioctl install:\n%s", r.Name, list)
			}
		}

		l.label(ctx, app.Name, `"ambient"`)
		waitUntil(t, "every pod captured again", 90*time.Second, l.annotated(true), l.diagnose)
		waitUntil(t, "traffic through the istioctl-installed mesh", time.Minute, func() bool {
			return app.Send(t, client.Name, url, 10).OK == 10
		}, l.diagnose)
		l.waitMetric(t, remote.Spec.NodeName, "an inbound mutual TLS connection from the client", map[string]string{
			"reporter": "destination", "source_principal": id("client"), "connection_security_policy": "mutual_tls",
		})
		// Both ztunnels are connected to istiod and in sync.
		waitUntil(t, "istioctl proxy-status listing every ztunnel in sync", time.Minute, func() bool {
			status, err := try(time.Minute, "proxy-status")
			if err != nil {
				t.Logf("%v", err)
				return false
			}
			for node, pod := range l.mesh.Pods(t, "ztunnel") {
				if !regexp.MustCompile(`(?m)^` + pod + `\S*\s.*SYNCED`).MatchString(status) {
					t.Logf("ztunnel %s on %s not in sync yet:\n%s", pod, node, status)
					return false
				}
			}
			return true
		}, l.diagnose)
		v := run(time.Minute, "version")
		for _, want := range []string{"control plane version: " + tag, "ztunnel version: " + tag} {
			if !strings.Contains(v, want) {
				t.Errorf("istioctl version does not say %q:\n%s", want, v)
			}
		}
		// Waypoints against the real API server and CRDs (nothing deploys
		// them yet, so a namespace of its own, not enrolled).
		wp := c.NewNamespace(t, "waypoint", nil)
		run(time.Minute, "waypoint", "apply", "-n", wp.Name, "--for", "all")
		if gw, err := c.Kubectl(ctx, "", "get", "gateway", "-n", wp.Name, "waypoint", "-o", "jsonpath={.spec.gatewayClassName} {.spec.listeners[0].port} {.spec.listeners[0].protocol} {.metadata.labels.istio\\.io/waypoint-for}"); err != nil || gw != "istio-waypoint 15008 HBONE all" {
			t.Errorf("istioctl waypoint apply made %q (%v), want class istio-waypoint, listener 15008 HBONE, for all", gw, err)
		}
		if list := run(time.Minute, "waypoint", "list", "-n", wp.Name); !regexp.MustCompile(`(?m)^waypoint\s`).MatchString(list) {
			t.Errorf("istioctl waypoint list does not show the waypoint:\n%s", list)
		}
		run(time.Minute, "waypoint", "delete", "-n", wp.Name, "--all")
		if gw, err := c.Kubectl(ctx, "", "get", "gateway", "-n", wp.Name, "-o", "name"); err != nil || strings.TrimSpace(gw) != "" {
			t.Errorf("after istioctl waypoint delete --all: %q (%v)", gw, err)
		}
		workloads := run(time.Minute, "ztunnel-config", "workloads", "--node", client.Spec.NodeName, "--workload-namespace", app.Name)
		for _, p := range []string{client.Name, remote.Name} {
			if !regexp.MustCompile(`(?m)^` + app.Name + `\s+` + p + `\s.*\sHBONE\s*$`).MatchString(workloads) {
				t.Errorf("istioctl ztunnel-config workloads does not list %s with protocol HBONE:\n%s", p, workloads)
			}
		}
	})
}

// l4 holds what TestL4Mesh's steps share.
type l4 struct {
	t    *testing.T
	c    *framework.Cluster
	mesh *framework.Mesh
	app  *framework.Namespace
}

func (l *l4) label(ctx context.Context, ns, value string) {
	l.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, dataplaneLabel, value)
	if _, err := l.c.Client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *l4) annotated(want bool) func() bool {
	return func() bool {
		for _, p := range l.app.Pods(l.t, "") {
			if (p.Annotations[redirectAnno] == "enabled") != want {
				return false
			}
		}
		return true
	}
}

// delete removes a resource from the app namespace; one already gone is
// no error, so it also serves as a cleanup.
func (l *l4) delete(ctx context.Context, kind, name string) {
	l.t.Helper()
	if _, err := l.c.Kubectl(ctx, "", "delete", "-n", l.app.Name, kind, name, "--ignore-not-found"); err != nil {
		l.t.Error(err)
	}
}

// diagnose is what a person needs when the mesh misbehaves: the app
// namespace, the mesh's pods and logs, and each ztunnel's config dump.
// followedLogs are pods' logs followed from a moment on, for when the pods
// are gone.
type followedLogs struct {
	cancel context.CancelFunc
	pods   []string // "node/pod"
	out    []chan string
}

// followLogs follows the logs of the given pods (node to pod name) in the
// istio namespace until they exit or stop is called.
func followLogs(c *framework.Cluster, pods map[string]string) *followedLogs {
	ctx, cancel := context.WithCancel(context.Background())
	f := &followedLogs{cancel: cancel}
	for node, pod := range pods {
		out := make(chan string, 1)
		go func() {
			logs, err := c.Kubectl(ctx, "", "logs", "-f", "-n", framework.IstioNamespace, pod)
			if err != nil && ctx.Err() == nil {
				logs += "\n(" + err.Error() + ")"
			}
			out <- logs
		}()
		f.pods = append(f.pods, node+"/"+pod)
		f.out = append(f.out, out)
	}
	return f
}

func (f *followedLogs) stop() { f.cancel() }

// report stops following and returns each pod's warnings and errors and
// its last lines.
func (f *followedLogs) report() string {
	f.stop()
	var b strings.Builder
	for i, pod := range f.pods {
		lines := strings.Split(strings.TrimSpace(<-f.out[i]), "\n")
		fmt.Fprintf(&b, "--- replaced ztunnel %s: warnings and errors\n", pod)
		for _, line := range lines {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
				fmt.Fprintf(&b, "%.600s\n", line)
			}
		}
		fmt.Fprintf(&b, "--- replaced ztunnel %s: last lines\n", pod)
		for _, line := range lines[max(0, len(lines)-30):] {
			fmt.Fprintf(&b, "%.600s\n", line)
		}
	}
	return b.String()
}

func (l *l4) diagnose() string {
	var b strings.Builder
	b.WriteString(diagnose(l.t, l.mesh, l.app))
	for node, pod := range l.mesh.Pods(l.t, "ztunnel") {
		fmt.Fprintf(&b, "--- config dump of %s on %s\n%.6000s\n", pod, node, configDump(l.c, pod))
	}
	return b.String()
}

// configDump reads a ztunnel's config dump from its admin port, which
// listens on localhost in its pod, through kubectl port-forward; on
// failure it says why instead.
func configDump(c *framework.Cluster, pod string) string {
	addrs, stop, err := forward(c, framework.IstioNamespace, pod, 15000)
	if err != nil {
		return err.Error()
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addrs[0]+"/config_dump", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// waitMetric waits until a ztunnel (the one on node, or any if node is
// empty) has a nonzero istio_tcp_connections_opened_total series carrying
// every label of want.
func (l *l4) waitMetric(t *testing.T, node, what string, want map[string]string) {
	t.Helper()
	var last string
	waitUntil(t, what, 30*time.Second, func() bool {
		for n, pod := range l.mesh.Pods(t, "ztunnel") {
			if node != "" && n != node {
				continue
			}
			metrics := ztunnelMetrics(t, l.c, pod)
			last = metrics
			if hasSeries(metrics, "istio_tcp_connections_opened_total", want) {
				return true
			}
		}
		return false
	}, func() string {
		return fmt.Sprintf("want istio_tcp_connections_opened_total with %v; last metrics:\n%s", want, grepLines(last, "istio_tcp_connections_opened_total"))
	})
}

// ztunnelMetrics reads a ztunnel's Prometheus metrics (15020) through the
// API server's pod proxy.
func ztunnelMetrics(t *testing.T, c *framework.Cluster, pod string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body, err := c.Client.CoreV1().Pods(framework.IstioNamespace).ProxyGet("http", pod, "15020", "/metrics", nil).DoRaw(ctx)
	if err != nil {
		// Retried by the caller: the pod may be restarting.
		t.Logf("metrics of %s: %v", pod, err)
		return ""
	}
	return string(body)
}

// hasSeries tells whether metrics has a sample of name, above zero, with
// every label of want.
func hasSeries(metrics, name string, want map[string]string) bool {
	for line := range strings.SplitSeq(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") || strings.HasSuffix(line, " 0") {
			continue
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func grepLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// packets counts the packets of a pcap that match a tcpdump filter.
func packets(t *testing.T, pcap []byte, filter string) int {
	t.Helper()
	out, err := framework.Packets(pcap, filter)
	if err != nil {
		t.Fatalf("read the capture with filter %q: %v", filter, err)
	}
	return len(strings.Split(strings.TrimSpace(out), "\n")) - boolInt(strings.TrimSpace(out) == "")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func restarts(p corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// ztunnelLogged reports whether a line of some ztunnel's log holds all of
// parts.
func ztunnelLogged(t *testing.T, mesh *framework.Mesh, parts ...string) bool {
	for _, pod := range mesh.Pods(t, "ztunnel") {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		logs, err := mesh.Namespace.Logs(ctx, pod, "")
		cancel()
		if err != nil {
			t.Logf("logs of %s: %v", pod, err)
			continue
		}
		for line := range strings.SplitSeq(logs, "\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				return true
			}
		}
	}
	return false
}
