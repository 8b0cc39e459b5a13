//go:build e2e

package framework

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IstioNamespace is where the mesh is installed, as Istio's docs do.
const IstioNamespace = "istio-system"

// MeshOptions says how InstallMesh deploys the mesh. The zero value is
// the images the Makefile builds, the redirection mode the node agent
// picks, and info logs.
type MeshOptions struct {
	// Hub and Tag of the mesh's images (global.hub, global.tag); default
	// HUB and TAG, else localhost/mesh and dev, as `make images` builds them.
	Hub, Tag string
	// RedirectMode is the cni chart's ambient.redirectMode: auto, ebpf or
	// nftables.
	RedirectMode string
	// LogLevel of every component: debug, info, warn or error.
	LogLevel string
	// DNSCapture sends enrolled pods' DNS to ztunnel.
	DNSCapture bool
}

// Mesh is the mesh installed by InstallMesh: the istiod, istio-cni and
// ztunnel Helm releases (Deployment istiod, DaemonSets istio-cni-node and
// ztunnel) in Namespace, istio-system.
type Mesh struct {
	Namespace *Namespace
	cluster   *Cluster
	removed   bool
}

func (o MeshOptions) withDefaults() MeshOptions {
	if o.Hub == "" {
		o.Hub = env("HUB", "localhost/mesh")
	}
	if o.Tag == "" {
		o.Tag = env("TAG", "dev")
	}
	if o.RedirectMode == "" {
		o.RedirectMode = "auto"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	return o
}

// HelmValues are the --set flags of a chart for these options.
func (o MeshOptions) HelmValues(chart string) []string {
	o = o.withDefaults()
	common := []string{"global.hub=" + o.Hub, "global.tag=" + o.Tag}
	switch chart {
	case "istiod":
		return append(common, "profile=ambient", "global.logging.level="+o.LogLevel)
	case "cni":
		return append(common, "profile=ambient", "ambient.redirectMode="+o.RedirectMode,
			"logging.level="+o.LogLevel, fmt.Sprintf("ambient.dnsCapture=%t", o.DNSCapture))
	case "ztunnel":
		return append(common, "logLevel="+o.LogLevel)
	}
	return nil
}

// Helm runs the helm CLI (HELM, else the one `make deps` builds) against
// the cluster and returns its combined output.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	bin := os.Getenv("HELM")
	if bin == "" {
		// The one make deps built last (the pinned version), when HELM
		// does not say.
		found, _ := filepath.Glob(filepath.Join(repoRoot(), ".cache", "helm", "*", "helm"))
		var newest time.Time
		for _, f := range found {
			if fi, err := os.Stat(f); err == nil && fi.ModTime().After(newest) {
				bin, newest = f, fi.ModTime()
			}
		}
		if bin == "" {
			return "", fmt.Errorf("no helm CLI: set HELM or run make deps")
		}
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ChartPath is the directory of one of the project's charts.
func ChartPath(chart string) string { return filepath.Join(repoRoot(), "charts", chart) }

// HelmInstall installs (or upgrades) one release of the mesh from the
// project's chart with helm, waiting for its objects to be ready.
func (c *Cluster) HelmInstall(ctx context.Context, r Release, o MeshOptions) error {
	args := []string{"upgrade", "--install", r.Name, ChartPath(r.Chart), "-n", IstioNamespace,
		"--create-namespace", "--wait", "--timeout", "3m"}
	for _, v := range o.HelmValues(r.Chart) {
		args = append(args, "--set", v)
	}
	_, err := c.Helm(ctx, args...)
	return err
}

// SystemNamespace is the mesh's namespace, for its pods, logs and dumps;
// the tests never delete it.
func (c *Cluster) SystemNamespace() *Namespace { return &Namespace{Name: IstioNamespace, cluster: c} }

// InstallMesh installs the mesh with helm as docs/install.md tells a user
// (istio-base, istiod, istio-cni, ztunnel into istio-system) and waits
// until istiod, the node agent on every node and ztunnel on every node
// are ready. On failure it prints the namespace's pods, events and logs.
// The releases other than istio-base (shared, with the CRDs) are removed
// when the test ends, or earlier by Remove.
//
// The node agent is node-wide (it adds the istio-cni plugin to every
// node's CNI config), so only one mesh may be installed at a time.
func (c *Cluster) InstallMesh(t testing.TB, o MeshOptions) *Mesh {
	t.Helper()
	c.InstallCRDs(t)
	m := &Mesh{Namespace: c.SystemNamespace(), cluster: c}
	t.Cleanup(func() { m.Remove(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, r := range Releases[1:] {
		if err := c.HelmInstall(ctx, r, o); err != nil {
			t.Fatalf("install %s: %v\n%s", r.Name, err, m.Namespace.Dump())
		}
	}
	for _, w := range meshWorkloads {
		m.Namespace.WaitRollout(t, w, 3*time.Minute)
	}
	return m
}

// meshWorkloads are what InstallMesh waits for, in the order they become
// ready: ztunnel needs istiod's xDS and the agent's ZDS snapshot.
var meshWorkloads = []string{"deployment/istiod", "daemonset/istio-cni-node", "daemonset/ztunnel"}

// Remove uninstalls the mesh's releases: the node agents first, so that
// each, seeing its DaemonSet gone, takes the istio-cni plugin out of its
// node's CNI config (else every new pod would fail closed), then ztunnel
// and istiod. istio-base stays. Calling it again does nothing.
func (m *Mesh) Remove(t testing.TB) {
	t.Helper()
	if m.removed {
		return
	}
	m.removed = true
	if err := m.cluster.UninstallMesh(context.Background()); err != nil {
		t.Errorf("remove the mesh: %v\n%s", err, m.Namespace.Dump())
	}
}

// UninstallMesh removes the istio-cni, ztunnel and istiod releases (those
// that exist), waits for their pods to be gone and checks that no node's
// CNI config still names the plugin.
func (c *Cluster) UninstallMesh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	var failures []string
	for _, r := range []struct{ release, app string }{{"istio-cni", "istio-cni-node"}, {"ztunnel", "ztunnel"}, {"istiod", "istiod"}} {
		if _, err := c.Helm(ctx, "uninstall", r.release, "-n", IstioNamespace, "--ignore-not-found", "--wait", "--timeout", "2m"); err != nil {
			failures = append(failures, err.Error())
			continue
		}
		if err := c.waitPodsGone(ctx, r.app); err != nil {
			failures = append(failures, err.Error())
		}
	}
	if left := c.pluginLeft(); len(left) > 0 {
		failures = append(failures, fmt.Sprintf("the istio-cni plugin is still in %s: new pods there will fail until it is removed", strings.Join(left, ", ")))
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "\n"))
	}
	return nil
}

// waitPodsGone waits until no pod of the component is left.
func (c *Cluster) waitPodsGone(ctx context.Context, app string) error {
	for {
		list, err := c.Client.CoreV1().Pods(IstioNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err == nil && len(list.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			n := 0
			if list != nil {
				n = len(list.Items)
			}
			return fmt.Errorf("%d %s pods still there (last error: %v)", n, app, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// pluginLeft lists the local cluster's CNI config files that still name
// the istio-cni plugin; it knows nothing of other clusters.
func (c *Cluster) pluginLeft() []string {
	if c.local == nil {
		return nil
	}
	confs, _ := filepath.Glob(filepath.Join(c.local.StateDir, "nodes", "*", "etc-cni-net.d", "*.conflist"))
	var left []string
	for _, f := range confs {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), `"istio-cni"`) {
			left = append(left, f)
		}
	}
	return left
}

// Pods returns the mesh's running pods of one component ("istiod",
// "ztunnel" or "istio-cni-node") by node name.
func (m *Mesh) Pods(t testing.TB, app string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := m.cluster.Client.CoreV1().Pods(m.Namespace.Name).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatalf("list %s pods: %v", app, err)
	}
	out := map[string]string{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p.Name
		}
	}
	return out
}

// Logs returns the logs of a component's running pods by node name, for
// tests that look for what ztunnel or the node agent reported.
func (m *Mesh) Logs(t testing.TB, app string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string]string{}
	for node, pod := range m.Pods(t, app) {
		logs, err := m.Namespace.Logs(ctx, pod, "")
		if err != nil {
			t.Fatalf("logs of %s: %v", pod, err)
		}
		out[node] = logs
	}
	return out
}
