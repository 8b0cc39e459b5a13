//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ambient-mesh/mesh/tests/framework"
)

const (
	dataplaneLabel = "istio.io/dataplane-mode"
	redirectAnno   = "ambient.istio.io/redirection"
)

// TestAmbientEnrollment installs the mesh (istiod, the istio-cni-node and
// ztunnel DaemonSets) into the local cluster and checks the user's journey
// of the CNI: labelling a namespace captures its running pods, new pods
// start captured, traffic between them goes through ztunnel as HBONE, and
// removing the label releases them; with the node agent away, a new pod of
// an enrolled namespace does not start, and starts captured once the agent
// is back; restarting ztunnel keeps enrolled pods' traffic flowing.
func TestAmbientEnrollment(t *testing.T) {
	c := framework.Get(t)
	mesh := c.InstallMesh(t, framework.MeshOptions{})
	ns := c.NewNamespace(t, "cni", nil)
	ctx := t.Context()

	ns.Apply(t, c.EchoServer("server", "v1", 2))
	ns.Apply(t, c.EchoClient("client", "client"))
	ns.WaitRollout(t, "deployment/server", 3*time.Minute)
	ns.WaitRollout(t, "deployment/client", 3*time.Minute)
	ns.WaitEndpoints(t, "server", 2, time.Minute)
	client := ns.Pods(t, "app=client")[0].Name
	url := "http://server." + ns.Name + ".svc.cluster.local/"
	// hbone counts ztunnel's outbound HBONE connections from the client pod.
	hbone := func() int {
		n := 0
		for _, l := range mesh.Logs(t, "ztunnel") {
			for line := range strings.SplitSeq(l, "\n") {
				if strings.Contains(line, `"direction":"outbound"`) && strings.Contains(line, `"via":"hbone"`) &&
					strings.Contains(line, `"pod":"`+ns.Name+`/`+client+`"`) {
					n++
				}
			}
		}
		return n
	}
	send := func(what string, want int) {
		t.Helper()
		if s := ns.Send(t, client, url, 5); s.OK != 5 {
			t.Fatalf("%s: %d of 5 requests ok: %v\n%s", what, s.OK, s.ErrorSamples, diagnose(t, mesh, ns))
		}
		if got := hbone(); want >= 0 && got < want {
			t.Fatalf("%s: %d HBONE connections from the client in ztunnel's logs, want at least %d\n%s", what, got, want, diagnose(t, mesh, ns))
		}
	}

	// The Service's rules reach kube-proxy on both nodes a moment after
	// its endpoints exist.
	waitUntil(t, "the server reachable before enrollment", time.Minute, func() bool {
		return ns.Send(t, client, url, 3).OK == 3
	}, func() string { return diagnose(t, mesh, ns) })
	if n := hbone(); n != 0 {
		t.Fatalf("before enrollment ztunnel carried %d connections of the client", n)
	}

	label := func(v string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, dataplaneLabel, v)
		if _, err := c.Client.CoreV1().Namespaces().Patch(ctx, ns.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	annotated := func(want bool) func() bool {
		return func() bool {
			for _, p := range ns.Pods(t, "") {
				if (p.Annotations[redirectAnno] == "enabled") != want {
					return false
				}
			}
			return true
		}
	}

	t.Run("labelling captures running pods", func(t *testing.T) {
		label(`"ambient"`)
		waitUntil(t, "every running pod annotated as captured", 90*time.Second, annotated(true), func() string { return diagnose(t, mesh, ns) })
		before := hbone()
		send("after labelling", before+5)

		// ztunnel on the client's node holds the client (admin config
		// dump) and counts its connections (metrics).
		clientPod := ns.Pods(t, "app=client")[0]
		zt := mesh.Pods(t, "ztunnel")[clientPod.Spec.NodeName]
		addrs := portForward(t, c, mesh.Namespace.Name, zt, 15000, 15020)
		// Every workload of the cluster is in the dump; only an enrolled
		// pod on its node makes ztunnel hold a certificate for its identity.
		dump := httpGet(t, "http://"+addrs[0]+"/config_dump")
		if id := "spiffe://cluster.local/ns/" + ns.Name + "/sa/client"; !strings.Contains(dump, `"identity": "`+id+`"`) {
			t.Errorf("ztunnel's config dump on %s holds no certificate for %s:\n%.3000s", clientPod.Spec.NodeName, id, dump)
		}
		metrics := httpGet(t, "http://"+addrs[1]+"/metrics")
		if !strings.Contains(metrics, `source_workload="client"`) || !strings.Contains(metrics, "istio_tcp_connections_opened_total") {
			t.Errorf("ztunnel's metrics on %s count no connection of the client:\n%.3000s", clientPod.Spec.NodeName, metrics)
		}
	})

	t.Run("a new pod starts captured", func(t *testing.T) {
		ns.Apply(t, c.EchoClient("late", "late"))
		ns.WaitRollout(t, "deployment/late", 3*time.Minute)
		late := ns.Pods(t, "app=late")[0]
		if late.Annotations[redirectAnno] != "enabled" {
			t.Fatalf("new pod %s not annotated as captured: %v", late.Name, late.Annotations)
		}
		if !strings.Contains(strings.Join(values(mesh.Logs(t, "istio-cni-node")), "\n"), "pod enrolled at sandbox creation") {
			t.Errorf("the node agent did not enroll the new pod at sandbox creation\n%s", diagnose(t, mesh, ns))
		}
		if s := ns.Send(t, late.Name, url, 5); s.OK != 5 {
			t.Fatalf("from the new pod: %d of 5 ok: %v\n%s", s.OK, s.ErrorSamples, diagnose(t, mesh, ns))
		}
	})

	t.Run("ztunnel restart keeps traffic flowing", func(t *testing.T) {
		for _, pod := range mesh.Pods(t, "ztunnel") {
			if err := c.Client.CoreV1().Pods(mesh.Namespace.Name).Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		mesh.Namespace.WaitRollout(t, "daemonset/ztunnel", 2*time.Minute)
		waitUntil(t, "traffic through the new ztunnels", 90*time.Second, func() bool {
			return ns.Send(t, client, url, 3).OK == 3
		}, func() string { return diagnose(t, mesh, ns) })
		send("after the ztunnel restart", 1)
	})

	t.Run("with the node agent away a new pod does not start", func(t *testing.T) {
		agent := mesh.Namespace.Name
		park := `{"spec":{"template":{"spec":{"nodeSelector":{"e2e.mesh/no-such-node":"true"}}}}}`
		if _, err := c.Client.AppsV1().DaemonSets(agent).Patch(ctx, "istio-cni-node", types.StrategicMergePatchType, []byte(park), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the node agents gone", 2*time.Minute, func() bool { return len(mesh.Pods(t, "istio-cni-node")) == 0 }, nil)
		if _, err := c.Client.CoreV1().Pods(ns.Name).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "orphan", Labels: map[string]string{"app": "orphan"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "sleep", Image: c.ToolboxImage, ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"/bin/busybox", "sleep", "3600"},
			}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Its sandbox fails, naming the agent, for as long as the agent is away.
		waitUntil(t, "a sandbox failure naming the node agent", time.Minute, func() bool {
			evs, err := c.Client.CoreV1().Events(ns.Name).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=orphan"})
			if err != nil {
				return false
			}
			for _, e := range evs.Items {
				if e.Reason == "FailedCreatePodSandBox" && strings.Contains(e.Message, "istio-cni") {
					return true
				}
			}
			return false
		}, func() string { return ns.Dump() })
		if p, err := c.Client.CoreV1().Pods(ns.Name).Get(ctx, "orphan", metav1.GetOptions{}); err == nil && p.Status.Phase == corev1.PodRunning {
			t.Fatalf("pod started with the node agent away")
		}

		unpark := `{"spec":{"template":{"spec":{"nodeSelector":null}}}}`
		if _, err := c.Client.AppsV1().DaemonSets(agent).Patch(ctx, "istio-cni-node", types.StrategicMergePatchType, []byte(unpark), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		mesh.Namespace.WaitRollout(t, "daemonset/istio-cni-node", 2*time.Minute)
		waitUntil(t, "the pod started and captured once the agent is back", 3*time.Minute, func() bool {
			p, err := c.Client.CoreV1().Pods(ns.Name).Get(ctx, "orphan", metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodRunning && p.Annotations[redirectAnno] == "enabled"
		}, func() string { return diagnose(t, mesh, ns) })
		send("after the agent came back", 1)
	})

	t.Run("removing the label releases the pods", func(t *testing.T) {
		label("null")
		waitUntil(t, "every pod released", 90*time.Second, annotated(false), func() string { return diagnose(t, mesh, ns) })
		before := hbone()
		if s := ns.Send(t, client, url, 5); s.OK != 5 {
			t.Fatalf("after release: %d of 5 ok: %v\n%s", s.OK, s.ErrorSamples, diagnose(t, mesh, ns))
		}
		if after := hbone(); after != before {
			t.Errorf("released client still went through ztunnel: %d new HBONE connections", after-before)
		}
	})
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// waitUntil polls cond until it holds, failing after timeout with what
// dump says.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool, dump func() string) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			msg := ""
			if dump != nil {
				msg = dump()
			}
			t.Fatalf("%s: not after %s\n%s", what, timeout, msg)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
}

// diagnose is what a person needs when enrollment misbehaves: the test
// namespace, and the node agents' and ztunnels' logs.
func diagnose(t *testing.T, mesh *framework.Mesh, ns *framework.Namespace) string {
	var b strings.Builder
	b.WriteString(ns.Dump())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, app := range []string{"istio-cni-node", "ztunnel"} {
		for node, pod := range mesh.Pods(t, app) {
			logs, _ := mesh.Namespace.Logs(ctx, pod, "")
			lines := strings.Split(strings.TrimSpace(logs), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			fmt.Fprintf(&b, "--- %s on %s (last %d lines)\n%s\n", app, node, len(lines), strings.Join(lines, "\n"))
		}
	}
	return b.String()
}

// portForward forwards local ports to the pod's ports with kubectl for the
// rest of the test and returns the local addresses, in order.
func portForward(t *testing.T, c *framework.Cluster, namespace, pod string, ports ...int) []string {
	t.Helper()
	addrs, stop, err := forward(c, namespace, pod, ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addrs
}

// forward starts kubectl port-forward from local ports to the pod's ports
// and returns the local addresses, in order, and how to stop it.
func forward(c *framework.Cluster, namespace, pod string, ports ...int) ([]string, func(), error) {
	args := []string{"--kubeconfig", c.Kubeconfig, "-n", namespace, "port-forward", "pod/" + pod}
	for _, p := range ports {
		args = append(args, fmt.Sprintf(":%d", p))
	}
	cmd := exec.Command(c.KubectlBin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	var stderr framework.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	found := map[int]string{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for len(found) < len(ports) {
		select {
		case line, ok := <-lines:
			if !ok {
				stop()
				return nil, nil, fmt.Errorf("kubectl port-forward to %s ended: %s", pod, stderr.String())
			}
			// "Forwarding from 127.0.0.1:41231 -> 15000"
			var local string
			var remote int
			if _, err := fmt.Sscanf(line, "Forwarding from %s -> %d", &local, &remote); err == nil && strings.HasPrefix(local, "127.0.0.1:") {
				found[remote] = local
			}
		case <-deadline:
			stop()
			go func() {
				for range lines {
				}
			}()
			return nil, nil, fmt.Errorf("kubectl port-forward to %s: not forwarding after 30s: %s", pod, stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	addrs := make([]string, len(ports))
	for i, p := range ports {
		addrs[i] = found[p]
	}
	return addrs, stop, nil
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}
