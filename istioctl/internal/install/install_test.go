package install

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	kubefake "helm.sh/helm/v4/pkg/kube/fake"
	"helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
)

// Test binaries get Helm's test capabilities (Kubernetes v1.20), older than
// the charts accept; render for a current one.
func TestMain(m *testing.M) {
	kv, err := common.ParseKubeVersion("v1.36.0")
	if err != nil {
		panic(err)
	}
	RenderKubeVersion = kv
	os.Exit(m.Run())
}

// readyCluster is a fake cluster where what the charts deploy is ready: the
// Helm SDK records releases in memory and applies nothing, so the workloads
// and CRDs install waits for are there from the start.
func readyCluster(t *testing.T) (*Installer, *strings.Builder, *storage.Storage) {
	t.Helper()
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	ds := func(name string) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system"},
			Spec:       appsv1.DaemonSetSpec{Selector: sel(name)},
			Status:     appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, UpdatedNumberScheduled: 2, NumberReady: 2, NumberAvailable: 2},
		}
	}
	istiod := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: "istio-system"},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: sel("istiod")},
		Status:     appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1},
	}
	dc := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{crdGVR: "CustomResourceDefinitionList"})
	names, err := baseCRDNames(context.Background(), "istio-system")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			// As the istio-base release leaves them.
			"metadata": map[string]any{"name": n, "annotations": map[string]any{
				"meta.helm.sh/release-name": "istio-base", "meta.helm.sh/release-namespace": "istio-system"}},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}},
		}}
		if _, err := dc.Resource(crdGVR).Create(context.Background(), crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mem := driver.NewMemory()
	mem.SetNamespace("istio-system")
	store := storage.Init(mem)
	var out strings.Builder
	in := &Installer{
		Clients:   &kube.Clients{Kube: fake.NewClientset(ds("istio-cni-node"), ds("ztunnel"), istiod), Dynamic: dc},
		Namespace: "istio-system",
		Timeout:   2 * time.Second,
		Poll:      10 * time.Millisecond,
		Out:       &out,
		HelmConfig: func() (*action.Configuration, error) {
			cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
			cfg.Releases = store
			cfg.KubeClient = &kubefake.PrintingKubeClient{Out: io.Discard}
			caps := common.DefaultCapabilities.Copy()
			caps.KubeVersion = *RenderKubeVersion
			cfg.Capabilities = caps
			return cfg, nil
		},
	}
	return in, &out, store
}

func releaseVersions(t *testing.T, store *storage.Storage) map[string]int {
	t.Helper()
	rels, err := store.ListDeployed()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rels {
		acc, err := release.NewAccessor(r)
		if err != nil {
			t.Fatal(err)
		}
		out[acc.Name()] = acc.Version()
	}
	return out
}

func TestInstallUpgradeUninstall(t *testing.T) {
	in, out, store := readyCluster(t)
	ctx := context.Background()
	vals := map[string]map[string]any{"ztunnel": {"logLevel": "debug"}}

	if err := in.Install(ctx, vals); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "✔ Istio core installed\n✔ Istiod installed\n✔ CNI installed\n✔ Ztunnel installed\n✔ Installation complete\n"; got != want {
		t.Fatalf("install output:\n%s\nwant:\n%s", got, want)
	}
	if got := releaseVersions(t, store); len(got) != 4 || got["istio-base"] != 1 || got["istiod"] != 1 || got["istio-cni"] != 1 || got["ztunnel"] != 1 {
		t.Fatalf("releases after install: %v", got)
	}

	// Running install again upgrades each release.
	out.Reset()
	if err := in.Install(ctx, vals); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "✔ Istio core upgraded\n✔ Istiod upgraded\n✔ CNI upgraded\n✔ Ztunnel upgraded\n✔ Installation complete\n"; got != want {
		t.Fatalf("second install output:\n%s\nwant:\n%s", got, want)
	}
	if got := releaseVersions(t, store); got["istio-base"] != 2 || got["ztunnel"] != 2 {
		t.Fatalf("releases after the second install: %v", got)
	}

	out.Reset()
	if err := in.Uninstall(ctx, false); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, "✔ CNI removed\n✔ Ztunnel removed\n✔ Istiod removed\n✔ Istio core removed\n✔ Uninstall complete\n") {
		t.Fatalf("uninstall output:\n%s", got)
	}
	if !strings.Contains(got, "Left in the cluster: namespace istio-system; ") || !strings.Contains(got, "CRDs of the base chart (istioctl uninstall --purge deletes them): ") ||
		!strings.Contains(got, "authorizationpolicies.security.istio.io") {
		t.Fatalf("uninstall does not say what is left:\n%s", got)
	}
	if got := releaseVersions(t, store); len(got) != 0 {
		t.Fatalf("releases after uninstall: %v", got)
	}

	out.Reset()
	if err := in.Uninstall(ctx, true); err != nil {
		t.Fatal(err)
	}
	got = out.String()
	if !strings.Contains(got, "CNI: no release istio-cni, skipped") || !strings.Contains(got, "CRDs deleted") || !strings.HasSuffix(got, "Left in the cluster: namespace istio-system\n") {
		t.Fatalf("purge output:\n%s", got)
	}
	if l, err := in.Clients.Dynamic.Resource(crdGVR).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Fatalf("CRDs left after --purge: %v, %v", len(l.Items), err)
	}
}

func TestInstallStopsAtTheFirstChartNotReady(t *testing.T) {
	in, out, store := readyCluster(t)
	in.Timeout = 200 * time.Millisecond
	if err := in.Clients.Kube.AppsV1().Deployments("istio-system").Delete(context.Background(), "istiod", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := in.Install(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "istiod: timed out after 200ms waiting for readiness:\ndeployment/istiod is not ready: 0/0 ready, not found") {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(out.String(), "CNI") {
		t.Fatalf("install went on after istiod failed:\n%s", out.String())
	}
	if got := releaseVersions(t, store); len(got) != 2 {
		t.Fatalf("releases: %v", got)
	}
}

func TestInstallOverReleaseUninstalledWithHistory(t *testing.T) {
	in, out, store := readyCluster(t)
	ctx := context.Background()
	if err := in.Install(ctx, nil); err != nil {
		t.Fatal(err)
	}
	cfg, _ := in.HelmConfig()
	un := action.NewUninstall(cfg)
	un.KeepHistory = true
	if _, err := un.Run("ztunnel"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := in.Install(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "✔ Ztunnel installed\n") {
		t.Fatalf("output:\n%s", out.String())
	}
	if got := releaseVersions(t, store); got["ztunnel"] != 2 {
		t.Fatalf("releases: %v", got)
	}
}

// TestGatewayAPICRDsOfAnotherOwnerAreLeftAlone: Gateway API CRDs another
// installer owns are neither taken over by install nor deleted by
// uninstall --purge, which deletes only what istio-base installed.
func TestGatewayAPICRDsOfAnotherOwnerAreLeftAlone(t *testing.T) {
	in, out, _ := readyCluster(t)
	ctx := context.Background()
	crds := in.Clients.Dynamic.Resource(crdGVR)
	l, err := crds.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var gatewayAPI []string
	for _, item := range l.Items {
		if strings.HasSuffix(item.GetName(), ".gateway.networking.k8s.io") {
			item.SetAnnotations(map[string]string{"meta.helm.sh/release-name": "gateway-api", "meta.helm.sh/release-namespace": "infra"})
			if _, err := crds.Update(ctx, &item, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			gatewayAPI = append(gatewayAPI, item.GetName())
		}
	}
	if len(gatewayAPI) == 0 {
		t.Fatal("the base chart has no Gateway API CRD")
	}
	if err := in.Install(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "the Gateway API CRDs already belong to Helm release infra/gateway-api: left as they are") {
		t.Errorf("install does not say it leaves the Gateway API CRDs alone:\n%s", out)
	}
	if err := in.Uninstall(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, n := range gatewayAPI {
		if _, err := crds.Get(ctx, n, metav1.GetOptions{}); err != nil {
			t.Errorf("uninstall --purge deleted %s, which istio-base did not install: %v", n, err)
		}
	}
	if _, err := crds.Get(ctx, "authorizationpolicies.security.istio.io", metav1.GetOptions{}); err == nil {
		t.Error("uninstall --purge kept Istio's CRDs")
	}
}

// TestZtunnelFollowsTheInstallNamespace: with -i, ztunnel looks for istiod
// in the namespace istioctl installs it into, unless told otherwise.
func TestZtunnelFollowsTheInstallNamespace(t *testing.T) {
	in := &Installer{Clients: &kube.Clients{}, Namespace: "mesh-sys", Out: io.Discard}
	got, err := in.completeValues(context.Background(), "ztunnel", map[string]any{"logLevel": "debug"})
	if err != nil || got["istioNamespace"] != "mesh-sys" || got["logLevel"] != "debug" {
		t.Errorf("ztunnel values %v, %v; want istioNamespace mesh-sys and logLevel kept", got, err)
	}
	got, _ = in.completeValues(context.Background(), "ztunnel", map[string]any{"istioNamespace": "elsewhere"})
	if got["istioNamespace"] != "elsewhere" {
		t.Errorf("an explicit istioNamespace was overridden: %v", got)
	}
}
