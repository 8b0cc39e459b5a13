// Command demo is the README's main job on the cluster KUBECONFIG names:
// it installs the mesh with helm as docs/install.md does, deploys the
// sample app in a namespace labelled for ambient, sends it traffic from a
// client pod, and prints what happened: the workloads ztunnel captured,
// the connections ztunnel counted with both identities and their
// security policy, which replica answered, and the commands to look
// further.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
	"github.com/ambient-mesh/mesh/tests/framework"
)

const (
	namespace      = "demo"
	istioNamespace = "istio-system"
)

// ambientCharts are the charts Istio's ambient Helm docs install with
// --set profile=ambient.
var ambientCharts = map[string]bool{"istiod": true, "cni": true}

func main() {
	// Bounded, so a misbehaving cluster ends the demo with an error, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	err := run(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

type tools struct {
	ctx                                 context.Context
	kubeconfig, kubectl, helm, istioctl string
}

func (tl tools) run(stdin, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(tl.ctx, bin, append([]string{"--kubeconfig", tl.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s%s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func run(ctx context.Context) error {
	tl := tools{ctx: ctx, kubeconfig: os.Getenv("KUBECONFIG"), kubectl: os.Getenv("KUBECTL"), helm: os.Getenv("HELM"), istioctl: os.Getenv("ISTIOCTL")}
	image := os.Getenv("ECHO_IMAGE")
	hub, tag := os.Getenv("HUB"), os.Getenv("TAG")
	if tl.kubeconfig == "" || tl.kubectl == "" || tl.helm == "" || tl.istioctl == "" || image == "" || hub == "" || tag == "" {
		return fmt.Errorf("KUBECONFIG, KUBECTL, HELM, ISTIOCTL, ECHO_IMAGE, HUB and TAG must be set (run it with `make demo`)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", tl.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	k := func(stdin string, args ...string) (string, error) { return tl.run(stdin, tl.kubectl, args...) }

	for _, r := range framework.Releases {
		profile := ""
		if ambientCharts[r.Chart] {
			profile = "--set profile=ambient"
		}
		step("helm upgrade --install %s charts/%s -n %s %s", r.Name, r.Chart, istioNamespace, profile)
		args := []string{"upgrade", "--install", r.Name, filepath.Join("charts", r.Chart), "-n", istioNamespace,
			"--create-namespace", "--wait", "--timeout", "5m", "--set", "global.hub=" + hub, "--set", "global.tag=" + tag}
		if profile != "" {
			args = append(args, "--set", "profile=ambient")
		}
		if _, err := tl.run("", tl.helm, args...); err != nil {
			return err
		}
	}

	step("deploying the sample app in namespace %q, labelled istio.io/dataplane-mode=ambient: echo (2 replicas, one per node) and a client", namespace)
	manifest := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + namespace + "\n  labels: {istio.io/dataplane-mode: ambient}\n---\n" +
		framework.EchoServerYAML(image, "echo", "v1", 2) + "---\n" + framework.EchoClientYAML(image, "client", "client")
	if _, err := k(manifest, "apply", "-n", namespace, "-f", "-"); err != nil {
		return err
	}
	for _, d := range []string{"deployment/echo", "deployment/client"} {
		if _, err := k("", "rollout", "status", "-n", namespace, d, "--timeout=3m"); err != nil {
			return err
		}
	}
	pods, err := capturedPods(ctx, client)
	if err != nil {
		return err
	}
	var clientPod *corev1.Pod
	podNode := map[string]string{}
	for i, p := range pods {
		podNode[p.Name] = p.Spec.NodeName
		if p.Labels["app"] == "client" {
			clientPod = &pods[i]
		}
	}
	if clientPod == nil {
		return fmt.Errorf("no running client pod in %s", namespace)
	}

	url := "http://echo." + namespace + ".svc.cluster.local/"
	const count = 40
	step("sending %d HTTP requests from %s to %s (one new connection each)", count, clientPod.Name, url)
	out, err := k("", "exec", "-n", namespace, clientPod.Name, "--", "/usr/local/bin/echo", "client", "--url", url, "--count", fmt.Sprint(count), "--concurrency", "4")
	var sum echo.Summary
	if jerr := json.Unmarshal([]byte(out), &sum); jerr != nil {
		return fmt.Errorf("echo client: %v (output %q)", err, out)
	}

	workloads, err := tl.run("", tl.istioctl, "ztunnel-config", "workloads", "--node", clientPod.Spec.NodeName, "--workload-namespace", namespace)
	if err != nil {
		return err
	}
	conns, err := connections(ctx, client)
	if err != nil {
		return err
	}

	fmt.Printf("\n== Workloads in %s as ztunnel on %s holds them (istioctl ztunnel-config workloads)\n%s", namespace, clientPod.Spec.NodeName, workloads)
	fmt.Printf("\n== Connections ztunnel accepted for them (istio_tcp_connections_opened_total, reporter=destination)\n")
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tSOURCE PRINCIPAL\tDESTINATION PRINCIPAL\tSECURITY POLICY\tCONNECTIONS")
	for _, c := range conns {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.node, c.labels["source_principal"], c.labels["destination_principal"], c.labels["connection_security_policy"], c.value)
	}
	_ = w.Flush()
	fmt.Printf("\n== Requests\n")
	w = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ANSWERED BY\tNODE\tREQUESTS")
	names := make([]string, 0, len(sum.ByPod))
	for name := range sum.ByPod {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "%s\t%s\t%d\n", name, podNode[name], sum.ByPod[name])
	}
	_ = w.Flush()
	fmt.Printf("%d of %d requests succeeded; latency p50 %.1f ms, p90 %.1f ms, max %.1f ms\n",
		sum.OK, sum.Total, sum.LatencyMs.P50, sum.LatencyMs.P90, sum.LatencyMs.Max)
	for _, e := range sum.ErrorSamples {
		fmt.Printf("error: %s\n", e)
	}
	fmt.Printf(`
== Look further (the cluster stays up; `+"`make cluster-down`"+` removes it)
  export KUBECONFIG=%s
  alias kubectl=%s istioctl=%s
  kubectl get pods -A -o wide
  istioctl ztunnel-config workloads          # every workload, as a ztunnel holds it
  istioctl ztunnel-config certificates       # the identities ztunnel holds certificates for
  istioctl ztunnel-config connections        # open connections through ztunnel
  istioctl proxy-status                      # ztunnels connected to istiod
  kubectl logs -n istio-system -l app=ztunnel   # the access log, one line per connection
`, tl.kubeconfig, tl.kubectl, tl.istioctl)
	if sum.OK != sum.Total {
		return fmt.Errorf("%d requests failed", sum.Errors)
	}
	if !strings.Contains(workloads, "HBONE") {
		return fmt.Errorf("ztunnel holds no workload of %s with protocol HBONE", namespace)
	}
	if len(conns) == 0 {
		return fmt.Errorf("ztunnel counted no mutual TLS connection into %s", namespace)
	}
	return nil
}

// capturedPods waits until every running pod of the namespace is captured
// (the node agent annotates it) and returns them.
func capturedPods(ctx context.Context, client kubernetes.Interface) ([]corev1.Pod, error) {
	step("waiting for the node agent to capture every pod of %s", namespace)
	for {
		list, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var pods []corev1.Pod
		captured := true
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
				continue
			}
			pods = append(pods, p)
			captured = captured && p.Annotations["ambient.istio.io/redirection"] == "enabled"
		}
		if captured && len(pods) > 0 {
			return pods, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pods of %s not captured: %w", namespace, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

type series struct {
	node   string
	labels map[string]string
	value  string
}

// connections reads every ztunnel's metrics through the API server's pod
// proxy and returns the inbound mutual TLS connections into the demo
// namespace.
func connections(ctx context.Context, client kubernetes.Interface) ([]series, error) {
	zts, err := client.CoreV1().Pods(istioNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=ztunnel"})
	if err != nil {
		return nil, err
	}
	var out []series
	for _, p := range zts.Items {
		body, err := client.CoreV1().Pods(istioNamespace).ProxyGet("http", p.Name, "15020", "/metrics", nil).DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("metrics of %s: %w", p.Name, err)
		}
		for line := range strings.SplitSeq(string(body), "\n") {
			s, ok := parseSample(line, "istio_tcp_connections_opened_total")
			if !ok || s.labels["reporter"] != "destination" || s.labels["destination_workload_namespace"] != namespace ||
				s.labels["connection_security_policy"] != "mutual_tls" {
				continue
			}
			s.node = p.Spec.NodeName
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node < out[j].node })
	return out, nil
}

// parseSample reads one Prometheus text sample of the metric name:
// name{k="v",...} value.
func parseSample(line, name string) (series, bool) {
	rest, ok := strings.CutPrefix(line, name+"{")
	if !ok {
		return series{}, false
	}
	end := strings.LastIndex(rest, "} ")
	if end < 0 {
		return series{}, false
	}
	s := series{labels: map[string]string{}, value: strings.TrimSpace(rest[end+2:])}
	for _, kv := range strings.Split(rest[:end], `",`) {
		k, v, ok := strings.Cut(kv, `="`)
		if ok {
			s.labels[k] = strings.TrimSuffix(v, `"`)
		}
	}
	return s, true
}

func step(format string, args ...any) {
	fmt.Printf("demo: "+format+"\n", args...)
}
