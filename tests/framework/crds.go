//go:build e2e

package framework

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// crdSources are the CustomResourceDefinitions the mesh reads, as their
// owners publish them in the Go modules the project already depends on:
// Istio's APIs (istio.io/api) and the standard Gateway API channel
// (sigs.k8s.io/gateway-api). Paths are relative to each module's root.
var crdSources = []struct{ module, path string }{
	{"istio.io/api", "kubernetes/customresourcedefinitions.gen.yaml"},
	{"sigs.k8s.io/gateway-api", "config/crd/standard"},
}

var (
	crdsOnce sync.Once
	crdsErr  error
)

// InstallCRDs applies the Istio and Gateway API CRDs to the cluster (once
// per test process; applying is idempotent) and waits until they are
// served. The CRDs are left installed: other suites and runs share them.
func (c *Cluster) InstallCRDs(t testing.TB) {
	t.Helper()
	crdsOnce.Do(func() { crdsErr = c.installCRDs(context.Background()) })
	if crdsErr != nil {
		t.Fatalf("install CRDs: %v", crdsErr)
	}
}

func (c *Cluster) installCRDs(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, s := range crdSources {
		out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", s.module).Output()
		if err != nil {
			return fmt.Errorf("locate module %s: %w", s.module, err)
		}
		dir := strings.TrimSpace(string(out))
		if dir == "" {
			return fmt.Errorf("module %s is not downloaded (run go mod download)", s.module)
		}
		path := filepath.Join(dir, s.path)
		if _, err := c.Kubectl(ctx, "", "apply", "--server-side", "--force-conflicts", "-f", path); err != nil {
			return err
		}
	}
	_, err := c.Kubectl(ctx, "", "wait", "--for=condition=Established", "--timeout=90s", "crd", "--all")
	return err
}
