package cmd

import (
	"os"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"

	"github.com/ambient-mesh/mesh/istioctl/internal/install"
)

// Test binaries get Helm's test capabilities (Kubernetes v1.20), older than
// the charts accept; render for a current one.
func TestMain(m *testing.M) {
	kv, err := common.ParseKubeVersion("v1.36.0")
	if err != nil {
		panic(err)
	}
	install.RenderKubeVersion = kv
	os.Exit(m.Run())
}
