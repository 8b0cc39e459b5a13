//go:build e2e

package framework

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Namespace is a test's own namespace. It is deleted when the test ends,
// after a dump of everything in it if the test failed.
type Namespace struct {
	Name    string
	cluster *Cluster
}

// NewNamespace creates a namespace with a unique name starting with prefix.
func (c *Cluster) NewNamespace(t testing.TB, prefix string, labels map[string]string) *Namespace {
	t.Helper()
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("%s-%s", prefix, hex.EncodeToString(suffix))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	ns := &Namespace{Name: name, cluster: c}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dump of namespace %s:\n%s", name, ns.Dump())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return ns
}

// Apply applies YAML in the namespace with kubectl, failing the test on error.
func (ns *Namespace) Apply(t testing.TB, yaml string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ns.cluster.Kubectl(ctx, yaml, "apply", "-n", ns.Name, "-f", "-"); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// WaitRollout waits until a workload (e.g. "deployment/echo") has rolled out.
func (ns *Namespace) WaitRollout(t testing.TB, workload string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	if _, err := ns.cluster.Kubectl(ctx, "", "rollout", "status", "-n", ns.Name, workload, "--timeout", timeout.String()); err != nil {
		t.Fatalf("rollout of %s: %v\n%s", workload, err, ns.Dump())
	}
}

// Pods lists the running pods matching a label selector.
func (ns *Namespace) Pods(t testing.TB, selector string) []corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := ns.cluster.Client.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("list pods %s: %v", selector, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out
}

// Exec runs a command in a pod's container through kubectl exec, the
// API server and the kubelet, and returns its standard output.
func (ns *Namespace) Exec(ctx context.Context, pod, container string, argv ...string) (string, error) {
	args := []string{"exec", "-n", ns.Name, pod}
	if container != "" {
		args = append(args, "-c", container)
	}
	return ns.cluster.Kubectl(ctx, "", append(append(args, "--"), argv...)...)
}

// Logs returns a container's log through kubectl logs.
func (ns *Namespace) Logs(ctx context.Context, pod, container string) (string, error) {
	args := []string{"logs", "-n", ns.Name, pod}
	if container != "" {
		args = append(args, "-c", container)
	}
	return ns.cluster.Kubectl(ctx, "", args...)
}

// Dump describes what is in the namespace: pods, events, container logs,
// and the tails of the local cluster's component logs.
func (ns *Namespace) Dump() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	section := func(title string, args ...string) {
		out, err := ns.cluster.Kubectl(ctx, "", args...)
		if err != nil {
			out += "\n" + err.Error()
		}
		fmt.Fprintf(&b, "=== %s\n%s\n", title, out)
	}
	section("pods", "get", "pods", "-n", ns.Name, "-o", "wide")
	section("describe pods", "describe", "pods", "-n", ns.Name)
	section("events", "get", "events", "-n", ns.Name, "--sort-by=.lastTimestamp")
	if pods, err := ns.cluster.Client.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			for _, c := range p.Spec.Containers {
				section("logs "+p.Name+"/"+c.Name, "logs", "-n", ns.Name, p.Name, "-c", c.Name, "--tail=50")
			}
		}
	}
	section("nodes", "get", "nodes", "-o", "wide")
	b.WriteString(ns.cluster.NodeLogTails(20))
	return b.String()
}

// WaitEndpoints waits until the Service's EndpointSlices list n ready
// endpoints, the input kube-proxy programs Services from.
func (ns *Namespace) WaitEndpoints(t testing.TB, service string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		slices, err := ns.cluster.Client.DiscoveryV1().EndpointSlices(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + service})
		cancel()
		ready := 0
		if err == nil {
			for _, s := range slices.Items {
				for _, ep := range s.Endpoints {
					if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
						ready++
					}
				}
			}
		}
		if ready == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s has %d ready endpoints after %s, want %d (last error: %v)\n%s", service, ready, timeout, n, err, ns.Dump())
		}
		time.Sleep(250 * time.Millisecond)
	}
}
