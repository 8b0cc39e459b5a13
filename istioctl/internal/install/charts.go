package install

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/release"

	"github.com/ambient-mesh/mesh/charts"
)

// chartNames are what Istio calls each chart: its Helm release name, as in
// Istio's Helm install docs (so that helm list and helm upgrade work on
// it), and its title in progress lines, as Istio's installer prints it.
var chartNames = map[string]struct{ release, title string }{
	"base":    {"istio-base", "Istio core"},
	"istiod":  {"istiod", "Istiod"},
	"cni":     {"istio-cni", "CNI"},
	"ztunnel": {"ztunnel", "Ztunnel"},
}

// ReleaseName returns the release name of chart.
func ReleaseName(chartName string) string {
	if n, ok := chartNames[chartName]; ok {
		return n.release
	}
	return chartName
}

func title(chartName string) string {
	if n, ok := chartNames[chartName]; ok {
		return n.title
	}
	return chartName
}

// LoadChart loads one of the embedded charts.
func LoadChart(name string) (*chart.Chart, error) {
	return loadChartFS(charts.FS, name)
}

func loadChartFS(fsys fs.FS, name string) (*chart.Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(fsys, name, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: strings.TrimPrefix(p, name+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("chart %s: not embedded in this istioctl", name)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	return c, nil
}

// Rendered is one chart rendered for a dry run.
type Rendered struct {
	Chart   string
	Release string
	// CRDs are the chart's crds/ files, which Helm applies before the
	// templates and never upgrades.
	CRDs     string
	Manifest string
}

// Render renders chartName with vals into namespace without touching a
// cluster, as `helm template` would.
func Render(ctx context.Context, chartName, namespace string, vals map[string]any) (*Rendered, error) {
	c, err := LoadChart(chartName)
	if err != nil {
		return nil, err
	}
	return render(ctx, c, chartName, namespace, vals)
}

// RenderKubeVersion, when set, is the Kubernetes version dry runs render
// for; otherwise the Helm SDK's default (derived from client-go's version in
// a release build, v1.20 in test binaries, older than the charts accept).
var RenderKubeVersion *common.KubeVersion

func render(ctx context.Context, c *chart.Chart, chartName, namespace string, vals map[string]any) (*Rendered, error) {
	in := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	in.DryRunStrategy = action.DryRunClient
	in.KubeVersion = RenderKubeVersion
	in.ReleaseName = ReleaseName(chartName)
	in.Namespace = namespace
	in.Replace = true
	in.IncludeCRDs = false // returned separately, below
	rel, err := in.RunWithContext(ctx, c, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart %s: %w", chartName, err)
	}
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return nil, fmt.Errorf("render chart %s: %w", chartName, err)
	}
	r := &Rendered{Chart: chartName, Release: in.ReleaseName, Manifest: acc.Manifest()}
	var crds []string
	for _, crd := range c.CRDObjects() {
		crds = append(crds, fmt.Sprintf("---\n# Source: %s\n%s", path.Join(c.Name(), crd.Name), strings.TrimSpace(string(crd.File.Data))))
	}
	r.CRDs = strings.Join(crds, "\n")
	return r, nil
}
