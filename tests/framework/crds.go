//go:build e2e

package framework

import (
	"context"
	"sync"
	"testing"
	"time"
)

var (
	crdsOnce sync.Once
	crdsErr  error
)

// InstallCRDs installs (or upgrades) the istio-base release, the Istio
// and Gateway API CRDs, with helm, once per test process, and waits until
// they are served. The release is left installed: other suites and runs
// share it, and its CRDs are kept even when it goes.
func (c *Cluster) InstallCRDs(t testing.TB) {
	t.Helper()
	crdsOnce.Do(func() { crdsErr = c.installCRDs(context.Background()) })
	if crdsErr != nil {
		t.Fatalf("install CRDs: %v", crdsErr)
	}
}

func (c *Cluster) installCRDs(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := c.HelmInstall(ctx, Releases[0], MeshOptions{}); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "", "wait", "--for=condition=Established", "--timeout=90s", "crd", "--all")
	return err
}
