//go:build e2e

package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambient-mesh/mesh/tests/cluster"
)

// Cluster is a running Kubernetes cluster the tests talk to.
type Cluster struct {
	Kubeconfig string
	KubectlBin string
	Client     kubernetes.Interface
	Config     *rest.Config
	// EchoImage is the test app's image, as loaded into the nodes.
	EchoImage string
	// ToolboxImage has a shell and the usual tools (busybox), invoked as
	// `busybox <applet>`.
	ToolboxImage string
	// local is the harness that runs the cluster, when it is the local one.
	local *cluster.Config
}

var (
	shared     *Cluster
	sharedErr  error
	sharedOnce sync.Once
	// startedHere is set when this process brought the cluster up, so Main
	// takes it down again.
	startedHere bool
)

// repoRoot finds the repository from the test's working directory.
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) && fileExists(filepath.Join(d, "tests", "cluster")) {
			return d
		}
	}
	return dir
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// localConfig describes the local cluster with the same settings and
// environment variables as the Makefile.
func localConfig() *cluster.Config {
	root := repoRoot()
	cache := filepath.Join(root, ".cache")
	kubeBin := os.Getenv("KUBE_BIN")
	if kubeBin == "" {
		matches, _ := filepath.Glob(filepath.Join(cache, "kube", "*", "bin"))
		if len(matches) > 0 {
			kubeBin = matches[len(matches)-1]
		}
	}
	nodes := 2
	fmt.Sscan(env("NODES", "2"), &nodes)
	return &cluster.Config{
		Nodes:        nodes,
		StateDir:     env("CLUSTER_STATE", filepath.Join(cache, "cluster")),
		KubeBinDir:   kubeBin,
		ImagesDir:    env("IMAGES_DIR", filepath.Join(cache, "images")),
		CNIPluginDir: env("CNI_PLUGINS", "/usr/lib/cni"),
		PauseImage:   env("PAUSE_IMAGE", "localhost/mesh/pause:dev"),
		CoreDNSImage: os.Getenv("COREDNS_IMAGE"),
		Out:          os.Stderr,
	}
}

// Get returns the cluster the tests run against: the one KUBECONFIG names
// if it answers, else the local cluster, brought up if it is not running.
func Get(t testing.TB) *Cluster {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = connect() })
	if sharedErr != nil {
		t.Fatalf("no cluster: %v", sharedErr)
	}
	return shared
}

func connect() (*Cluster, error) {
	local := localConfig()
	kubeconfig := os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = local.AdminKubeconfig()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		running := local.Running(ctx)
		cancel()
		if !running {
			if err := local.Up(context.Background()); err != nil {
				return nil, fmt.Errorf("bring up the local cluster: %w", err)
			}
			startedHere = true
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kubectl := env("KUBECTL", local.Kubectl())
	c := &Cluster{
		Kubeconfig:   kubeconfig,
		KubectlBin:   kubectl,
		Client:       client,
		Config:       cfg,
		EchoImage:    env("ECHO_IMAGE", env("HUB", "localhost/mesh")+"/echo:"+env("TAG", "dev")),
		ToolboxImage: env("TOOLBOX_IMAGE", env("HUB", "localhost/mesh")+"/toolbox:"+env("TAG", "dev")),
	}
	if kubeconfig == local.AdminKubeconfig() {
		c.local = local
	}
	return c, nil
}

// Main runs the tests and takes down a cluster this process brought up.
func Main(m *testing.M) int {
	code := m.Run()
	if startedHere && shared != nil && shared.local != nil && os.Getenv("KEEP_CLUSTER") == "" {
		if err := shared.local.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "cluster down: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Kubectl runs the real kubectl against the cluster and returns its
// standard output; the error carries standard error.
func (c *Cluster) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.KubectlBin, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// NodeLogTails returns the last lines of every node component's log, when
// the cluster is the local one.
func (c *Cluster) NodeLogTails(lines int) string {
	if c.local == nil {
		return ""
	}
	logs, _ := filepath.Glob(filepath.Join(c.local.StateDir, "logs", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(all) > lines {
			all = all[len(all)-lines:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", l, len(all), strings.Join(all, "\n"))
	}
	return b.String()
}

// ReadyNodes returns the names of the cluster's Ready nodes, sorted.
func (c *Cluster) ReadyNodes(t testing.TB) []string {
	t.Helper()
	nodes, err := c.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	var ready []string
	for _, n := range nodes.Items {
		if NodeReady(n) {
			ready = append(ready, n.Name)
		}
	}
	slices.Sort(ready)
	return ready
}
