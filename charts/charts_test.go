package charts

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
)

func TestOrderNamesEveryChart(t *testing.T) {
	t.Parallel()
	dirs, err := fs.ReadDir(FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range dirs {
		names = append(names, d.Name())
	}
	if want := slices.Sorted(slices.Values(Order)); !slices.Equal(names, want) {
		t.Fatalf("FS holds %v, Order names %v", names, Order)
	}
	for _, name := range Order {
		c := loadChart(t, name)
		m := c.Metadata
		if m.Name != name || m.APIVersion != "v2" || m.Version != "0.1.0" || m.AppVersion != "dev" || m.Description == "" || m.KubeVersion == "" {
			t.Errorf("%s/Chart.yaml: name %q apiVersion %q version %q appVersion %q description %q; want %s, v2, 0.1.0, dev, a description and a kubeVersion",
				name, m.Name, m.APIVersion, m.Version, m.AppVersion, m.Description, name)
		}
	}
}

// TestLint runs helm lint (strict templates, every rule) on each chart as
// embedded, for the default values and the ambient profile.
func TestLint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.CopyFS(dir, FS); err != nil {
		t.Fatal(err)
	}
	for _, name := range Order {
		for _, sets := range [][]string{nil, {"profile=ambient"}} {
			res := lint.RunAll(filepath.Join(dir, name), setValues(t, sets...), testNamespace)
			for _, msg := range res.Messages {
				if msg.Severity >= support.WarningSev {
					t.Errorf("lint %s %q: %v", name, sets, msg)
				}
			}
		}
	}
}

func TestProfiles(t *testing.T) {
	t.Parallel()
	for _, name := range Order {
		t.Run(name, func(t *testing.T) {
			empty := render(t, name)
			for _, sets := range [][]string{{"profile=ambient"}, {"global.profile=ambient"}} {
				if got := render(t, name, sets...); !slices.Equal(got.kinds(), empty.kinds()) {
					t.Errorf("%q renders %v, no profile renders %v", sets, got.kinds(), empty.kinds())
				}
			}
			renderFails(t, name, `unknown profile "demo"`, "profile=demo")
			renderFails(t, name, `unknown profile "default"`, "global.profile=default")
			// profile wins over global.profile, as in Istio.
			renderFails(t, name, `unknown profile "minimal"`, "profile=minimal", "global.profile=ambient")
		})
	}
}

// TestStandardLabels checks the labels tools select the mesh's objects by.
func TestStandardLabels(t *testing.T) {
	t.Parallel()
	for _, name := range Order {
		for _, o := range render(t, name) {
			if o.Kind == "CustomResourceDefinition" || strings.HasPrefix(o.Kind, "ValidatingAdmissionPolicy") {
				continue // the owners' objects, as published
			}
			for _, k := range []string{"app", "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
				if o.Labels[k] == "" {
					t.Errorf("%s %s/%s: no label %s", name, o.Kind, o.Name, k)
				}
			}
			if o.Labels["app.kubernetes.io/instance"] != releaseNames[name] || o.Labels["app.kubernetes.io/managed-by"] != "Helm" {
				t.Errorf("%s %s/%s: instance %q managed-by %q", name, o.Kind, o.Name, o.Labels["app.kubernetes.io/instance"], o.Labels["app.kubernetes.io/managed-by"])
			}
			if o.Kind != "ClusterRole" && o.Kind != "ClusterRoleBinding" && o.Namespace != testNamespace {
				t.Errorf("%s %s/%s: namespace %q, want the release's", name, o.Kind, o.Name, o.Namespace)
			}
		}
	}
}

// workloads of the charts that run something: chart, kind, name, container.
var workloads = []struct{ chart, kind, name, container, image string }{
	{"istiod", "Deployment", "istiod", "discovery", "pilot"},
	{"cni", "DaemonSet", "istio-cni-node", "install-cni", "install-cni"},
	{"ztunnel", "DaemonSet", "ztunnel", "istio-proxy", "ztunnel"},
}

// podSpec returns a workload's pod template.
func podSpec(t testing.TB, m manifest, kind, name string) *corev1.PodTemplateSpec {
	t.Helper()
	switch kind {
	case "Deployment":
		return &get[appsv1.Deployment](t, m, kind, name).Spec.Template
	case "DaemonSet":
		return &get[appsv1.DaemonSet](t, m, kind, name).Spec.Template
	}
	t.Fatalf("no pod template in a %s", kind)
	return nil
}

func container(t testing.TB, pod *corev1.PodTemplateSpec, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func TestImages(t *testing.T) {
	t.Parallel()
	for _, w := range workloads {
		// istiod also takes Istio's pilot. spelling.
		prefixes := []string{""}
		if w.chart == "istiod" {
			prefixes = append(prefixes, "pilot.")
		}
		for _, p := range prefixes {
			for _, tc := range []struct {
				sets []string
				want string
			}{
				{nil, "localhost/mesh/" + w.image + ":dev"},
				{[]string{"global.hub=registry.example/mesh", "global.tag=1.2.3"}, "registry.example/mesh/" + w.image + ":1.2.3"},
				// The chart's own hub and tag win over the global ones.
				{[]string{"global.hub=g.example", "global.tag=g", p + "hub=c.example", p + "tag=c"}, "c.example/" + w.image + ":c"},
				{[]string{"global.tag=g", p + "hub=c.example"}, "c.example/" + w.image + ":g"},
				// An image with a registry is taken as it is.
				{[]string{"global.hub=g.example", p + "image=quay.example/me/" + w.image + ":v9"}, "quay.example/me/" + w.image + ":v9"},
			} {
				c := container(t, podSpec(t, render(t, w.chart, tc.sets...), w.kind, w.name), w.container)
				if c.Image != tc.want || c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("%s %q: image %s (%s), want %s (IfNotPresent)", w.chart, tc.sets, c.Image, c.ImagePullPolicy, tc.want)
				}
			}
		}
	}
}

func TestResources(t *testing.T) {
	t.Parallel()
	defaults := map[string][2]string{"istiod": {"500m", "2Gi"}, "cni": {"100m", "100Mi"}, "ztunnel": {"200m", "512Mi"}}
	for _, w := range workloads {
		c := container(t, podSpec(t, render(t, w.chart), w.kind, w.name), w.container)
		want := defaults[w.chart]
		if cpu, mem := c.Resources.Requests.Cpu(), c.Resources.Requests.Memory(); cpu.String() != want[0] || mem.String() != want[1] {
			t.Errorf("%s: requests cpu %s memory %s, want %s %s", w.chart, cpu, mem, want[0], want[1])
		}
		prefix := ""
		if w.chart == "istiod" {
			prefix = "pilot."
		}
		c = container(t, podSpec(t, render(t, w.chart, prefix+"resources.requests.cpu=2", prefix+"resources.limits.memory=4Gi"), w.kind, w.name), w.container)
		if cpu, mem, lim := c.Resources.Requests.Cpu(), c.Resources.Requests.Memory(), c.Resources.Limits.Memory(); cpu.String() != "2" || mem.String() != want[1] || lim.String() != "4Gi" {
			t.Errorf("%s: set requests cpu 2 and limits memory 4Gi: got requests %s %s, limits %s", w.chart, cpu, mem, lim)
		}
	}
}

func TestSchedulingValues(t *testing.T) {
	t.Parallel()
	for _, w := range workloads {
		pod := podSpec(t, render(t, w.chart, "nodeSelector.pool=mesh", "tolerations[0].key=dedicated", "tolerations[0].operator=Exists",
			"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
			"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
			"podLabels.team=net", "podAnnotations.owner=net"), w.kind, w.name)
		if pod.Spec.NodeSelector["pool"] != "mesh" || len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0].Key != "dedicated" ||
			pod.Spec.Affinity == nil || pod.Labels["team"] != "net" || pod.Annotations["owner"] != "net" {
			t.Errorf("%s: nodeSelector %v tolerations %v affinity %v labels %v annotations %v", w.chart,
				pod.Spec.NodeSelector, pod.Spec.Tolerations, pod.Spec.Affinity, pod.Labels, pod.Annotations)
		}
		if pod.Labels["app"] == "" || pod.Labels["app"] != podSelector(t, render(t, w.chart), w.kind, w.name)["app"] {
			t.Errorf("%s: pod label app %q does not match the selector", w.chart, pod.Labels["app"])
		}
	}
}

func podSelector(t testing.TB, m manifest, kind, name string) map[string]string {
	t.Helper()
	if kind == "Deployment" {
		return get[appsv1.Deployment](t, m, kind, name).Spec.Selector.MatchLabels
	}
	return get[appsv1.DaemonSet](t, m, kind, name).Spec.Selector.MatchLabels
}

func TestImagePullSecrets(t *testing.T) {
	t.Parallel()
	accounts := map[string]string{"istiod": "istiod", "cni": "istio-cni", "ztunnel": "ztunnel"}
	for _, w := range workloads {
		m := render(t, w.chart, "global.imagePullSecrets={regcred,other}")
		sa := get[corev1.ServiceAccount](t, m, "ServiceAccount", accounts[w.chart])
		var got []string
		for _, s := range sa.ImagePullSecrets {
			got = append(got, s.Name)
		}
		if !slices.Equal(got, []string{"regcred", "other"}) {
			t.Errorf("%s: ServiceAccount pull secrets %v", w.chart, got)
		}
		if pod := podSpec(t, m, w.kind, w.name); pod.Spec.ServiceAccountName != accounts[w.chart] {
			t.Errorf("%s: pods run as %q, want %q", w.chart, pod.Spec.ServiceAccountName, accounts[w.chart])
		}
		if sa := get[corev1.ServiceAccount](t, render(t, w.chart), "ServiceAccount", accounts[w.chart]); len(sa.ImagePullSecrets) != 0 {
			t.Errorf("%s: pull secrets by default: %v", w.chart, sa.ImagePullSecrets)
		}
	}
}

// TestChartsAgree checks the values that must match across charts, with
// each chart's defaults: ztunnel reaches istiod's Service and is the node
// account istiod trusts; the agent and ztunnel share the ZDS directory.
func TestChartsAgree(t *testing.T) {
	t.Parallel()
	istiod, cni, zt := render(t, "istiod"), render(t, "cni"), render(t, "ztunnel")
	svc := get[corev1.Service](t, istiod, "Service", "istiod")
	var securePort int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "https-dns" {
			securePort = p.Port
		}
	}
	ztPod := podSpec(t, zt, "DaemonSet", "ztunnel")
	ztArgs := container(t, ztPod, "istio-proxy").Args
	if got, want := mustArg(t, ztArgs, "xds-address"), svc.Name+"."+testNamespace+".svc:"+strconv.Itoa(int(securePort)); got != want {
		t.Errorf("ztunnel dials %s, istiod serves %s", got, want)
	}
	nodeAccount := mustArg(t, container(t, podSpec(t, istiod, "Deployment", "istiod"), "discovery").Args, "node-accounts")
	if want := testNamespace + "/" + ztPod.Spec.ServiceAccountName; nodeAccount != want {
		t.Errorf("istiod trusts %s, ztunnel runs as %s", nodeAccount, want)
	}
	cniZDS := hostPathOf(t, podSpec(t, cni, "DaemonSet", "istio-cni-node"), "/var/run/ztunnel")
	ztZDS := hostPathOf(t, ztPod, "/var/run/ztunnel")
	if cniZDS != ztZDS || cniZDS != "/var/run/ztunnel" {
		t.Errorf("the agent serves ZDS in %s, ztunnel looks in %s", cniZDS, ztZDS)
	}
	td := mustArg(t, container(t, podSpec(t, istiod, "Deployment", "istiod"), "discovery").Args, "trust-domain")
	if got := mustArg(t, ztArgs, "trust-domain"); got != td {
		t.Errorf("trust domain: istiod %s, ztunnel %s", td, got)
	}
}

// hostPathOf returns the node path mounted at a container path.
func hostPathOf(t testing.TB, pod *corev1.PodTemplateSpec, mountPath string) string {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if m.MountPath != mountPath {
				continue
			}
			for _, v := range pod.Spec.Volumes {
				if v.Name == m.Name {
					if v.HostPath == nil {
						t.Fatalf("volume %s at %s is not a hostPath", v.Name, mountPath)
					}
					return v.HostPath.Path
				}
			}
			t.Fatalf("no volume %s", m.Name)
		}
	}
	t.Fatalf("nothing mounted at %s", mountPath)
	return ""
}
