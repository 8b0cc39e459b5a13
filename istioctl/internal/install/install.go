package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	helmkube "helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/release"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	"helm.sh/helm/v4/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/ambient-mesh/mesh/charts"
	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
)

// maxHistory is how many revisions of a release are kept, as helm
// upgrade's --history-max default.
const maxHistory = 10

// Installer installs and removes the mesh's releases in one namespace.
type Installer struct {
	Getter    genericclioptions.RESTClientGetter
	Clients   *kube.Clients
	Namespace string
	// Timeout bounds each chart's wait for readiness (or for its pods to go).
	Timeout time.Duration
	Out     io.Writer
	// Poll is how often readiness is checked; 2s when zero.
	Poll time.Duration
	// HelmConfig, when set, replaces the Helm SDK configuration built from
	// Getter (tests use in-memory release storage).
	HelmConfig func() (*action.Configuration, error)
}

func (in *Installer) helmConfig() (*action.Configuration, error) {
	if in.HelmConfig != nil {
		return in.HelmConfig()
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler))
	if err := cfg.Init(in.Getter, in.Namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// Install installs (or, where the release exists, upgrades) each chart in
// charts.Order with its values, waiting for each to be ready before the next.
func (in *Installer) Install(ctx context.Context, vals map[string]map[string]any) error {
	for _, name := range charts.Order {
		if err := in.installOne(ctx, name, vals[name]); err != nil {
			return err
		}
	}
	fmt.Fprintln(in.Out, "✔ Installation complete")
	return nil
}

func (in *Installer) installOne(ctx context.Context, chartName string, vals map[string]any) error {
	c, err := LoadChart(chartName)
	if err != nil {
		return err
	}
	cfg, err := in.helmConfig()
	if err != nil {
		return err
	}
	relName := ReleaseName(chartName)
	exists, replace, err := releaseState(cfg, relName)
	if err != nil {
		return err
	}
	vals, err = in.completeValues(ctx, chartName, vals)
	if err != nil {
		return err
	}
	var rel release.Releaser
	verb := "installed"
	if exists {
		verb = "upgraded"
		up := action.NewUpgrade(cfg)
		up.Namespace = in.Namespace
		up.WaitStrategy = helmkube.HookOnlyStrategy
		up.Timeout = in.Timeout
		up.MaxHistory = maxHistory
		// Declarative, like a first install: the release gets exactly these
		// values, so a setting left out goes back to its default.
		up.ResetValues = true
		up.TakeOwnership = adoptsExisting(chartName)
		up.ForceConflicts = adoptsExisting(chartName)
		rel, err = up.RunWithContext(ctx, relName, c, vals)
		if err != nil {
			if strings.Contains(err.Error(), "another operation") {
				return fmt.Errorf("upgrade release %s (chart %s): %w (an earlier install or upgrade was interrupted? helm rollback -n %s %s, or helm uninstall, clears it)", relName, chartName, err, in.Namespace, relName)
			}
			return fmt.Errorf("upgrade release %s (chart %s): %w", relName, chartName, err)
		}
	} else {
		ins := action.NewInstall(cfg)
		ins.Namespace = in.Namespace
		ins.ReleaseName = relName
		ins.CreateNamespace = true
		ins.Replace = replace // reuse the name of a release uninstalled with its history kept
		ins.WaitStrategy = helmkube.HookOnlyStrategy
		ins.Timeout = in.Timeout
		ins.TakeOwnership = adoptsExisting(chartName)
		ins.ForceConflicts = adoptsExisting(chartName)
		rel, err = ins.RunWithContext(ctx, c, vals)
		if err != nil {
			return fmt.Errorf("install release %s (chart %s): %w", relName, chartName, err)
		}
	}
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return fmt.Errorf("release %s: %w", relName, err)
	}
	objs, err := releaseObjects(c, acc.Manifest(), in.Namespace)
	if err != nil {
		return fmt.Errorf("release %s: %w", relName, err)
	}
	if err := in.waitReady(ctx, chartName, Waitable(objs)); err != nil {
		return err
	}
	fmt.Fprintf(in.Out, "✔ %s %s\n", title(chartName), verb)
	return nil
}

// completeValues adds what a chart needs from the install itself: ztunnel
// finds istiod in the namespace istioctl installs into, and the base chart
// leaves Gateway API CRDs that belong to someone else alone.
func (in *Installer) completeValues(ctx context.Context, chartName string, vals map[string]any) (map[string]any, error) {
	out := map[string]any{}
	maps.Copy(out, vals)
	switch chartName {
	case "ztunnel":
		if _, set := out["istioNamespace"]; !set {
			out["istioNamespace"] = in.Namespace
		}
	case "base":
		base, _ := out["base"].(map[string]any)
		if _, set := base["gatewayAPICRDs"]; set || in.Clients.Dynamic == nil {
			break
		}
		owner, err := in.gatewayAPIOwner(ctx)
		if err != nil {
			return nil, err
		}
		if owner != "" {
			fmt.Fprintf(in.Out, "  the Gateway API CRDs already belong to %s: left as they are (values.base.gatewayAPICRDs=false)\n", owner)
			nb := map[string]any{}
			maps.Copy(nb, base)
			nb["gatewayAPICRDs"] = false
			out["base"] = nb
		}
	}
	return out, nil
}

// gatewayAPIOwner names who owns the Gateway API's Gateway CRD when it
// exists and is not this install's istio-base release's; "" otherwise.
func (in *Installer) gatewayAPIOwner(ctx context.Context) (string, error) {
	crd, err := in.Clients.Dynamic.Resource(crdGVR).Get(ctx, "gateways.gateway.networking.k8s.io", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read customresourcedefinition/gateways.gateway.networking.k8s.io: %w", err)
	}
	a := crd.GetAnnotations()
	if a["meta.helm.sh/release-name"] == ReleaseName("base") && a["meta.helm.sh/release-namespace"] == in.Namespace {
		return "", nil
	}
	switch {
	case a["meta.helm.sh/release-name"] != "":
		return "Helm release " + a["meta.helm.sh/release-namespace"] + "/" + a["meta.helm.sh/release-name"], nil
	case crd.GetLabels()["app.kubernetes.io/managed-by"] != "":
		return crd.GetLabels()["app.kubernetes.io/managed-by"], nil
	}
	return "another installer (no Helm release)", nil
}

// adoptsExisting says whether a chart's release takes over objects that
// exist without belonging to it. The base chart does: its CRDs (Istio's and
// Gateway API's) are often there already, installed by kubectl, another
// release, or a removed istio-base whose CRDs were kept; istioctl applies
// them over (forcing server-side apply conflicts), as Istio's installer
// does, except Gateway API CRDs owned by someone else (completeValues). Other charts must not silently take
// over someone else's objects.
func adoptsExisting(chartName string) bool { return chartName == "base" }

// releaseState says whether release name exists (and is upgraded) or was
// uninstalled with its history kept (and is installed again in its place).
func releaseState(cfg *action.Configuration, name string) (exists, uninstalled bool, err error) {
	rel, err := action.NewGet(cfg).Run(name)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		return false, false, nil
	case err != nil:
		return false, false, fmt.Errorf("look up release %s: %w", name, err)
	}
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return false, false, fmt.Errorf("release %s: %w", name, err)
	}
	if acc.Status() == string(rcommon.StatusUninstalled) {
		return false, true, nil
	}
	return true, false, nil
}

// releaseObjects lists what a release of c holds: its manifest's objects and
// the CRDs of its crds/ directory, with namespaced objects defaulted to ns.
func releaseObjects(c *chart.Chart, manifest, ns string) ([]Object, error) {
	objs, err := Objects(manifest)
	if err != nil {
		return nil, err
	}
	if c != nil {
		for _, crd := range c.CRDObjects() {
			more, err := Objects(string(crd.File.Data))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", crd.Name, err)
			}
			objs = append(objs, more...)
		}
	}
	for i := range objs {
		if objs[i].Namespace == "" && objs[i].Kind != "CustomResourceDefinition" {
			objs[i].Namespace = ns
		}
	}
	return objs, nil
}

// UninstallOrder is the order releases are removed in: the CNI node agent
// first, so that it sees its own DaemonSet go and cleans up the nodes while
// ztunnel still serves the pods it redirected; then the rest in reverse
// install order.
func UninstallOrder() []string {
	order := []string{"cni"}
	for _, c := range slices.Backward(charts.Order) {
		if c != "cni" {
			order = append(order, c)
		}
	}
	return order
}

// Uninstall removes the releases in UninstallOrder, waiting for each one's
// pods to go, then reports what is left. With purge, it deletes the base
// chart's CRDs too.
func (in *Installer) Uninstall(ctx context.Context, purge bool) error {
	for _, name := range UninstallOrder() {
		if err := in.uninstallOne(ctx, name); err != nil {
			return err
		}
	}
	// Only the CRDs istio-base installed are the mesh's to delete (a base
	// installed without the Gateway API CRDs leaves those to their owner).
	crds, err := in.releaseCRDNames(ctx)
	if err != nil {
		return err
	}
	var present []string
	for _, n := range crds {
		_, err := in.Clients.Dynamic.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
		switch {
		case err == nil:
			present = append(present, n)
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("read customresourcedefinition/%s: %w", n, err)
		}
	}
	if purge {
		for _, n := range present {
			err := in.Clients.Dynamic.Resource(crdGVR).Delete(ctx, n, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete customresourcedefinition/%s: %w", n, err)
			}
		}
		if len(present) > 0 {
			fmt.Fprintf(in.Out, "✔ %d CRDs deleted\n", len(present))
		}
		present = nil
	}
	fmt.Fprintln(in.Out, "✔ Uninstall complete")
	fmt.Fprintf(in.Out, "Left in the cluster: namespace %s", in.Namespace)
	if len(present) > 0 {
		fmt.Fprintf(in.Out, "; %d CRDs of the base chart (istioctl uninstall --purge deletes them): %s", len(present), strings.Join(present, ", "))
	}
	fmt.Fprintln(in.Out)
	return nil
}

func (in *Installer) uninstallOne(ctx context.Context, chartName string) error {
	cfg, err := in.helmConfig()
	if err != nil {
		return err
	}
	relName := ReleaseName(chartName)
	rel, err := action.NewGet(cfg).Run(relName)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		fmt.Fprintf(in.Out, "  %s: no release %s, skipped\n", title(chartName), relName)
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up release %s: %w", relName, err)
	}
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return fmt.Errorf("release %s: %w", relName, err)
	}
	objs, err := releaseObjects(nil, acc.Manifest(), in.Namespace)
	if err != nil {
		return fmt.Errorf("release %s: %w", relName, err)
	}
	// Note each workload's pod selector before it is deleted.
	sels := map[Object]string{}
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "DaemonSet" {
			continue
		}
		_, sel, err := in.progress(ctx, o)
		if err == nil && sel != "" {
			sels[o] = sel
		}
	}
	un := action.NewUninstall(cfg)
	un.WaitStrategy = helmkube.HookOnlyStrategy
	un.Timeout = in.Timeout
	un.DeletionPropagation = "background"
	if _, err := un.Run(relName); err != nil {
		return fmt.Errorf("uninstall release %s: %w", relName, err)
	}
	if err := in.waitPodsGone(ctx, relName, in.Namespace, sels); err != nil {
		return err
	}
	fmt.Fprintf(in.Out, "✔ %s removed\n", title(chartName))
	return nil
}

// releaseCRDNames lists the CRDs the istio-base release of this namespace
// installed or adopted: Helm marks each with the release's name and
// namespace, and the keep policy leaves the marks when the release goes.
func (in *Installer) releaseCRDNames(ctx context.Context) ([]string, error) {
	if in.Clients.Dynamic == nil {
		return nil, nil
	}
	l, err := in.Clients.Dynamic.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list customresourcedefinitions: %w", err)
	}
	var names []string
	for _, crd := range l.Items {
		a := crd.GetAnnotations()
		if a["meta.helm.sh/release-name"] == ReleaseName("base") && a["meta.helm.sh/release-namespace"] == in.Namespace {
			names = append(names, crd.GetName())
		}
	}
	slices.Sort(names)
	return names, nil
}
