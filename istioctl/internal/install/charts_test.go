package install

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ambient-mesh/mesh/charts"
	"github.com/ambient-mesh/mesh/istioctl/internal/values"
)

func TestObjects(t *testing.T) {
	m := `---
# Source: x/templates/a.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ztunnel
  namespace: istio-system
---
# only a comment
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ztunnel}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gateways.gateway.networking.k8s.io}
`
	objs, err := Objects(m)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.Namespace+":"+o.String())
	}
	want := []string{"istio-system:serviceaccount/ztunnel", ":daemonset/ztunnel", ":customresourcedefinition/gateways.gateway.networking.k8s.io"}
	if !slices.Equal(got, want) {
		t.Fatalf("objects %q, want %q", got, want)
	}
	if w := Waitable(objs); len(w) != 2 || w[0].Kind != "DaemonSet" {
		t.Fatalf("waitable %v", w)
	}
	if _, err := Objects("kind: [oops"); err == nil || !strings.Contains(err.Error(), "manifest document 1") {
		t.Fatalf("error %v", err)
	}
}

func TestUninstallOrder(t *testing.T) {
	// The CNI agent must see its DaemonSet go first; ztunnel and istiod after.
	if got, want := UninstallOrder(), []string{"cni", "ztunnel", "istiod", "base"}; !slices.Equal(got, want) {
		t.Fatalf("uninstall order %v, want %v", got, want)
	}
	if len(UninstallOrder()) != len(charts.Order) {
		t.Fatalf("uninstall order misses charts of %v", charts.Order)
	}
}

func TestReleaseNames(t *testing.T) {
	for _, c := range charts.Order {
		if _, ok := chartNames[c]; !ok {
			t.Errorf("chart %s has no release name", c)
		}
	}
	if ReleaseName("base") != "istio-base" || ReleaseName("cni") != "istio-cni" {
		t.Fatalf("release names must follow Istio's Helm docs")
	}
}

// TestRenderEmbeddedCharts is what --dry-run prints: every embedded chart
// renders with values mapped from Istio-style settings, and holds the
// workloads install waits for.
func TestRenderEmbeddedCharts(t *testing.T) {
	spec, err := values.Build(nil, []string{"profile=ambient", "hub=registry.example/mesh", "tag=9.9.9", "values.ztunnel.logLevel=debug", "meshConfig.trustDomain=example.org"})
	if err != nil {
		t.Fatal(err)
	}
	perChart, err := values.ChartValues(spec)
	if err != nil {
		t.Fatal(err)
	}
	wantWaitable := map[string]string{
		"istiod":  "deployment/istiod",
		"cni":     "daemonset/istio-cni-node",
		"ztunnel": "daemonset/ztunnel",
	}
	for _, name := range charts.Order {
		t.Run(name, func(t *testing.T) {
			r, err := Render(context.Background(), name, "mesh-system", perChart[name])
			if err != nil {
				t.Fatal(err)
			}
			if r.Release != ReleaseName(name) {
				t.Errorf("release %s", r.Release)
			}
			c, err := LoadChart(name)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := releaseObjects(c, r.Manifest, "mesh-system")
			if err != nil {
				t.Fatal(err)
			}
			var waitable []string
			for _, o := range Waitable(objs) {
				if o.Kind != "CustomResourceDefinition" {
					waitable = append(waitable, o.String())
					if o.Namespace != "mesh-system" {
						t.Errorf("%s is in namespace %q, want mesh-system", o, o.Namespace)
					}
				}
			}
			if w := wantWaitable[name]; w != "" && !slices.Contains(waitable, w) {
				t.Errorf("rendered workloads %v lack %s", waitable, w)
			}
			if name != "base" && !strings.Contains(r.Manifest, "registry.example/mesh/") {
				t.Errorf("hub from --set hub= is not in the %s manifest", name)
			}
			if (name == "istiod" || name == "ztunnel") && !strings.Contains(r.Manifest, "trust-domain=example.org") {
				t.Errorf("meshConfig.trustDomain is not in the %s manifest", name)
			}
			if name != "base" && !strings.Contains(r.Manifest, ":9.9.9") {
				t.Errorf("tag from --set tag= is not in the %s manifest", name)
			}
		})
	}
}

func TestBaseCRDNames(t *testing.T) {
	names, err := baseCRDNames(context.Background(), "istio-system")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"authorizationpolicies.security.istio.io", "gateways.gateway.networking.k8s.io"} {
		if !slices.Contains(names, want) {
			t.Errorf("base CRDs %v lack %s", names, want)
		}
	}
}

// baseCRDNames lists the CRDs of the embedded base chart, from its crds/
// directory and its rendered templates: what a cluster holds once
// istio-base is installed.
func baseCRDNames(ctx context.Context, namespace string) ([]string, error) {
	c, err := LoadChart("base")
	if err != nil {
		return nil, err
	}
	r, err := render(ctx, c, "base", namespace, map[string]any{})
	if err != nil {
		return nil, err
	}
	objs, err := releaseObjects(c, r.Manifest, namespace)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range objs {
		if o.Kind == "CustomResourceDefinition" && !slices.Contains(names, o.Name) {
			names = append(names, o.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}
