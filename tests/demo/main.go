// Command demo deploys the sample app on the cluster KUBECONFIG names, sends
// it traffic from a client pod, and prints what happened: where every pod
// runs, which replica answered, and the address each server saw.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
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

const namespace = "demo"

func main() {
	// Bounded, so a misbehaving cluster ends the demo with an error, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	err := run(ctx)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	kubeconfig := os.Getenv("KUBECONFIG")
	kubectl := os.Getenv("KUBECTL")
	image := os.Getenv("ECHO_IMAGE")
	if kubeconfig == "" || kubectl == "" || image == "" {
		return fmt.Errorf("KUBECONFIG, KUBECTL and ECHO_IMAGE must be set (run it with `make demo`)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	k := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
		}
		return out.String(), nil
	}

	step("deploying the sample app in namespace %q: echo (2 replicas, spread over the nodes) and a client", namespace)
	manifest := "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + namespace + "}\n---\n" +
		framework.EchoServerYAML(image, "echo", "v1", 2) + "---\n" + framework.EchoClientYAML(image, "client", "client")
	if _, err := k(manifest, "apply", "-n", namespace, "-f", "-"); err != nil {
		return err
	}
	for _, d := range []string{"deployment/echo", "deployment/client"} {
		if _, err := k("", "rollout", "status", "-n", namespace, d, "--timeout=3m"); err != nil {
			return err
		}
	}

	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var clientPod *corev1.Pod
	podNode := map[string]string{}
	for i, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		podNode[p.Name] = p.Spec.NodeName
		if p.Labels["app"] == "client" {
			clientPod = &pods.Items[i]
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

	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tADDRESS\tREADY")
	for _, n := range nodes.Items {
		fmt.Fprintf(w, "%s\t%s\t%v\n", n.Name, framework.NodeInternalIP(n), framework.NodeReady(n))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "POD\tNODE\tPOD IP")
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			fmt.Fprintf(w, "%s\t%s\t%s\n", p.Name, p.Spec.NodeName, p.Status.PodIP)
		}
	}
	fmt.Fprintln(w)
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
	fmt.Printf("\n%d of %d requests succeeded; latency p50 %.1f ms, p90 %.1f ms, max %.1f ms\n",
		sum.OK, sum.Total, sum.LatencyMs.P50, sum.LatencyMs.P90, sum.LatencyMs.Max)
	if sum.First != nil {
		seen, _, _ := net.SplitHostPort(sum.First.ClientAddr)
		fmt.Printf("the server saw the client as %s (client pod IP %s)\n", seen, clientPod.Status.PodIP)
	}
	for _, e := range sum.ErrorSamples {
		fmt.Printf("error: %s\n", e)
	}
	fmt.Printf("\nThe cluster stays up: export KUBECONFIG=%s; `make cluster-down` removes it.\n", kubeconfig)
	if sum.OK != sum.Total {
		return fmt.Errorf("%d requests failed", sum.Errors)
	}
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("demo: "+format+"\n", args...)
}
