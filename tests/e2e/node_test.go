//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/tests/framework"
)

// TestNodeLevelDaemonSet checks what the mesh's node agents depend on: a
// hostNetwork DaemonSet pod is in its node's network namespace, a hostPath
// is the node's own (two nodes never share one), and with
// mountPropagation: HostToContainer the pod sees mounts its node makes after
// it started, such as the netns handle of a pod created later.
func TestNodeLevelDaemonSet(t *testing.T) {
	c := framework.Get(t)
	ctx := context.Background()
	ns := c.NewNamespace(t, "node", nil)
	hostDir := "/var/run/e2e-" + ns.Name
	ns.Apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      containers:
      - name: agent
        image: %s
        imagePullPolicy: IfNotPresent
        command: [/bin/busybox, sleep, "3600"]
        env:
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        volumeMounts:
        - {name: netns, mountPath: /host/netns, mountPropagation: HostToContainer}
        - {name: shared, mountPath: /host/shared}
      volumes:
      - name: netns
        hostPath: {path: /var/run/netns, type: DirectoryOrCreate}
      - name: shared
        hostPath: {path: %s, type: DirectoryOrCreate}
`, c.ToolboxImage, hostDir))
	ns.WaitRollout(t, "daemonset/agent", 3*time.Minute)

	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	agents := map[string]corev1.Pod{}
	for _, p := range ns.Pods(t, "app=agent") {
		agents[p.Spec.NodeName] = p
	}
	if len(agents) != len(nodes.Items) {
		t.Fatalf("%d agent pods for %d nodes", len(agents), len(nodes.Items))
	}
	sh := func(pod, script string) string {
		t.Helper()
		out, err := ns.Exec(ctx, pod, "", "/bin/busybox", "sh", "-c", script)
		if err != nil {
			t.Fatalf("in %s: %s: %v", pod, script, err)
		}
		return out
	}

	t.Run("hostNetwork is the node's network", func(t *testing.T) {
		for _, n := range nodes.Items {
			pod := agents[n.Name]
			if pod.Status.PodIP != framework.NodeInternalIP(n) {
				t.Errorf("agent on %s has IP %s, want the node's %s", n.Name, pod.Status.PodIP, framework.NodeInternalIP(n))
			}
			if out := sh(pod.Name, "/bin/busybox ip -o -4 addr show eth0"); !strings.Contains(out, framework.NodeInternalIP(n)+"/") {
				t.Errorf("agent on %s does not see the node's eth0 address %s: %s", n.Name, framework.NodeInternalIP(n), out)
			}
		}
	})

	t.Run("hostPath is per node", func(t *testing.T) {
		for _, pod := range agents {
			sh(pod.Name, "echo $NODE_NAME > /host/shared/$NODE_NAME")
		}
		t.Cleanup(func() {
			for _, pod := range agents {
				_, _ = ns.Exec(ctx, pod.Name, "", "/bin/busybox", "sh", "-c", "rm -f /host/shared/*")
			}
		})
		for name, pod := range agents {
			if got := strings.Fields(sh(pod.Name, "/bin/busybox ls /host/shared")); len(got) != 1 || got[0] != name {
				t.Errorf("agent on %s sees %v in its hostPath, want only %s", name, got, name)
			}
		}
	})

	t.Run("mounts propagate from the node", func(t *testing.T) {
		netnsMounts := func(pod string) map[string]bool {
			out := sh(pod, "/bin/busybox awk '$5 ~ \"^/host/netns/\" {print $5}' /proc/self/mountinfo")
			set := map[string]bool{}
			for _, f := range strings.Fields(out) {
				set[f] = true
			}
			return set
		}
		target := nodes.Items[0].Name
		before := map[string]map[string]bool{}
		for name, pod := range agents {
			before[name] = netnsMounts(pod.Name)
		}
		ns.Apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: late
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: late
    image: %s
    imagePullPolicy: IfNotPresent
    command: [/bin/busybox, sleep, "3600"]
`, target, c.ToolboxImage))
		if _, err := c.Kubectl(ctx, "", "wait", "-n", ns.Name, "pod/late", "--for=condition=Ready", "--timeout=2m"); err != nil {
			t.Fatalf("pod late: %v\n%s", err, ns.Dump())
		}
		var added []string
		for m := range netnsMounts(agents[target].Name) {
			if !before[target][m] {
				added = append(added, m)
			}
		}
		if len(added) == 0 {
			t.Fatalf("the agent on %s saw no new netns mount after a pod started there; mounts before: %v", target, before[target])
		}
		for name, pod := range agents {
			if name == target {
				continue
			}
			after := netnsMounts(pod.Name)
			for _, m := range added {
				if after[m] {
					t.Errorf("the netns %s of a pod on %s is visible on %s", m, target, name)
				}
			}
		}
	})
}
