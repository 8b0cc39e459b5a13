package cmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	// No cluster: commands under test must not need one.
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	root := NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestInstallDryRun(t *testing.T) {
	dir := t.TempDir()
	iop := filepath.Join(dir, "iop.yaml")
	if err := os.WriteFile(iop, []byte(`apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  profile: ambient
  hub: registry.example/mesh
  values:
    ztunnel:
      logLevel: warn
`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := run(t, "install", "--dry-run", "-f", iop, "--set", "tag=7.7.7", "-i", "mesh-system")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# Release istio-base (chart base) in namespace mesh-system",
		"# Release istiod (chart istiod) in namespace mesh-system",
		"# Release istio-cni (chart cni) in namespace mesh-system",
		"# Release ztunnel (chart ztunnel) in namespace mesh-system",
		"#   logLevel: warn",
		"kind: CustomResourceDefinition",
		"registry.example/mesh/ztunnel:7.7.7",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("dry-run output lacks %q", want)
		}
	}
	order := []int{
		strings.Index(got, "# Release istio-base"), strings.Index(got, "# Release istiod "),
		strings.Index(got, "# Release istio-cni"), strings.Index(got, "# Release ztunnel"),
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Fatalf("charts not printed in install order: %v", order)
		}
	}
}

func TestInstallRejects(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--dry-run", "--set", "profile=demo"}, `profile "demo" is not supported: this mesh is ambient only`},
		{[]string{"install", "--dry-run", "--set", "components.pilot.enabled=false"}, `unknown key "components"`},
		{[]string{"install", "--dry-run", "-f", "/nonexistent/iop.yaml"}, "/nonexistent/iop.yaml"},
	} {
		_, err := run(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want %q", tt.args, err, tt.want)
		}
	}
}

func TestZtunnelConfigArgs(t *testing.T) {
	_, err := run(t, "ztunnel-config", "clusters")
	if err == nil || !strings.Contains(err.Error(), `unknown section "clusters": want one of workloads, services, policies, certificates, connections, all`) {
		t.Fatalf("error %v", err)
	}
	_, err = run(t, "ztunnel-config", "workloads", "-o", "wide")
	if err == nil || !strings.Contains(err.Error(), `output format "wide"`) {
		t.Fatalf("error %v", err)
	}
}

func TestVersionClientOnly(t *testing.T) {
	got, err := run(t, "version", "--remote=false")
	if err != nil {
		t.Fatal(err)
	}
	if got != "client version: dev\n" {
		t.Fatalf("got %q", got)
	}
}

func TestSummarize(t *testing.T) {
	if got := summarize(map[string]int{"1.2.3": 2, "1.2.4": 1}, "pod"); got != "1.2.3 (2 pods), 1.2.4 (1 pod)" {
		t.Fatal(got)
	}
	if got := summarize(map[string]int{"1.28.0": 3}, "proxy"); got != "1.28.0 (3 proxies)" {
		t.Fatal(got)
	}
}
