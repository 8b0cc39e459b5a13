package charts

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The RBAC rules of each component, as docs/install.md lists them.
var (
	istiodClusterRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "namespaces", "nodes", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create", "update"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{"security.istio.io", "networking.istio.io", "gateway.networking.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"security.istio.io"}, Resources: []string{"authorizationpolicies/status", "peerauthentications/status"}, Verbs: []string{"update"}},
	}
	istiodNamespaceRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"cacerts", "istio-ca-secret"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
	}
)

func istiodContainer(t testing.TB, m manifest) *corev1.Container {
	t.Helper()
	return container(t, &get[appsv1.Deployment](t, m, "Deployment", "istiod").Spec.Template, "discovery")
}

func TestIstiodService(t *testing.T) {
	t.Parallel()
	m := render(t, "istiod", "profile=ambient")
	svc := get[corev1.Service](t, m, "Service", "istiod")
	want := map[string]int32{"grpc-xds": 15010, "https-dns": 15012, "http-monitoring": 15014}
	if len(svc.Spec.Ports) != len(want) {
		t.Errorf("Service ports %v, want %v", svc.Spec.Ports, want)
	}
	c := istiodContainer(t, m)
	for _, p := range svc.Spec.Ports {
		if want[p.Name] != p.Port || p.TargetPort != intstr.FromInt32(p.Port) {
			t.Errorf("Service port %s: %d -> %s, want %d", p.Name, p.Port, p.TargetPort.String(), want[p.Name])
		}
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == p.Port }) {
			t.Errorf("Service port %s: the container does not listen on %d", p.Name, p.Port)
		}
	}
	pod := get[appsv1.Deployment](t, m, "Deployment", "istiod").Spec.Template
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("Service selects %s=%s; the pods have %q", k, v, pod.Labels[k])
		}
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.HTTPGet.Port.IntValue() != 8080 {
		t.Errorf("readiness probe %+v, want GET /ready on 8080", p)
	}
}

func TestIstiodArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sets []string
		want map[string]string // flag -> value; "" value: flag absent
	}{
		{nil, map[string]string{"namespace": testNamespace, "node-accounts": "istio-system/ztunnel", "trust-domain": "cluster.local", "log-level": "info", "root-namespace-selector": "", "cluster-id": ""}},
		{[]string{"global.multiCluster.clusterName=east"}, map[string]string{"cluster-id": "east"}},
		{[]string{"trustedZtunnelNamespace=ztunnel-ns"}, map[string]string{"node-accounts": "ztunnel-ns/ztunnel"}},
		{[]string{"trustedZtunnelName=node-proxy"}, map[string]string{"node-accounts": "istio-system/node-proxy"}},
		{[]string{"pilot.trustedZtunnelNamespace=a", "pilot.trustedZtunnelName=b"}, map[string]string{"node-accounts": "a/b"}},
		{[]string{"rootNamespaceSelector=mesh=on"}, map[string]string{"root-namespace-selector": "mesh=on"}},
		{[]string{"meshConfig.trustDomain=example.org"}, map[string]string{"trust-domain": "example.org"}},
		{[]string{"global.logging.level=debug"}, map[string]string{"log-level": "debug"}},
		{[]string{`global.logging.level=ads:debug\,default:warning`}, map[string]string{"log-level": "warn"}},
	} {
		args := istiodContainer(t, render(t, "istiod", tc.sets...)).Args
		for flag, want := range tc.want {
			got, ok := argValue(args, flag)
			if want == "" && ok {
				t.Errorf("%q: -%s=%s, want no -%s", tc.sets, flag, got, flag)
			} else if want != "" && got != want {
				t.Errorf("%q: -%s=%q, want %q (args %q)", tc.sets, flag, got, want, args)
			}
		}
	}
	renderFails(t, "istiod", `log level "trace"`, "global.logging.level=trace")
}

func TestIstiodMeshConfig(t *testing.T) {
	t.Parallel()
	cm := get[corev1.ConfigMap](t, render(t, "istiod", "meshConfig.trustDomain=example.org", "meshConfig.rootNamespace=mesh-root"), "ConfigMap", "istio")
	var mesh map[string]any
	if err := yaml.UnmarshalStrict([]byte(cm.Data["mesh"]), &mesh); err != nil {
		t.Fatalf("key mesh: %v\n%s", err, cm.Data["mesh"])
	}
	if mesh["trustDomain"] != "example.org" || mesh["rootNamespace"] != "mesh-root" || len(cm.Data) != 1 {
		t.Errorf("ConfigMap istio: %v", cm.Data)
	}
	cm = get[corev1.ConfigMap](t, render(t, "istiod"), "ConfigMap", "istio")
	if err := yaml.UnmarshalStrict([]byte(cm.Data["mesh"]), &mesh); err != nil || mesh["trustDomain"] != "cluster.local" {
		t.Errorf("default mesh config %q (%v), want trustDomain cluster.local", cm.Data["mesh"], err)
	}
	if m := render(t, "istiod", "configMap=false"); len(m.find("ConfigMap")) != 0 {
		t.Errorf("configMap=false still renders %v", m.find("ConfigMap"))
	}
}

func TestIstiodReplicas(t *testing.T) {
	t.Parallel()
	for sets, want := range map[string]int32{"": 1, "replicaCount=3": 3, "pilot.replicaCount=2": 2} {
		var s []string
		if sets != "" {
			s = []string{sets}
		}
		d := get[appsv1.Deployment](t, render(t, "istiod", s...), "Deployment", "istiod")
		if d.Spec.Replicas == nil || *d.Spec.Replicas != want {
			t.Errorf("%q: replicas %v, want %d", sets, d.Spec.Replicas, want)
		}
	}
}

func TestIstiodRBAC(t *testing.T) {
	t.Parallel()
	m := render(t, "istiod")
	cr := get[rbacv1.ClusterRole](t, m, "ClusterRole", "istiod-clusterrole-istio-system")
	if !rulesEqual(cr.Rules, istiodClusterRules) {
		t.Errorf("istiod ClusterRole rules:\n%v\nwant\n%v", cr.Rules, istiodClusterRules)
	}
	checkBinding(t, get[rbacv1.ClusterRoleBinding](t, m, "ClusterRoleBinding", cr.Name).RoleRef,
		get[rbacv1.ClusterRoleBinding](t, m, "ClusterRoleBinding", cr.Name).Subjects, "ClusterRole", cr.Name, "istiod")
	role := get[rbacv1.Role](t, m, "Role", "istiod")
	if !rulesEqual(role.Rules, istiodNamespaceRules) {
		t.Errorf("istiod Role rules: %v, want %v", role.Rules, istiodNamespaceRules)
	}
	rb := get[rbacv1.RoleBinding](t, m, "RoleBinding", "istiod")
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", "istiod", "istiod")

	// A second install in another namespace gets its own cluster-scoped objects.
	other, err := renderChart(t, "istiod", "mesh-2")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
		if a, b := m.find(kind), other.find(kind); len(a) != 1 || len(b) != 1 || a[0].Name == b[0].Name {
			t.Errorf("%s in two namespaces: %v and %v", kind, a, b)
		}
	}
}

// checkBinding checks a binding grants the role to the chart's own
// ServiceAccount in the release namespace, and no one else.
func checkBinding(t testing.TB, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, role, account string) {
	t.Helper()
	if ref != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: kind, Name: role}) {
		t.Errorf("binding refers to %+v, want %s %s", ref, kind, role)
	}
	if want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: account, Namespace: testNamespace}}; !slices.Equal(subjects, want) {
		t.Errorf("binding of %s: subjects %+v, want %+v", role, subjects, want)
	}
}

func rulesEqual(a, b []rbacv1.PolicyRule) bool {
	return slices.EqualFunc(a, b, func(x, y rbacv1.PolicyRule) bool {
		return slices.Equal(x.APIGroups, y.APIGroups) && slices.Equal(x.Resources, y.Resources) && slices.Equal(x.Verbs, y.Verbs) &&
			slices.Equal(x.ResourceNames, y.ResourceNames) && len(x.NonResourceURLs) == 0 && len(y.NonResourceURLs) == 0
	})
}

func TestIstiodPodDisruptionBudget(t *testing.T) {
	t.Parallel()
	for _, sets := range [][]string{nil, {"replicaCount=3"}} {
		m := render(t, "istiod", sets...)
		pdb := get[policyv1.PodDisruptionBudget](t, m, "PodDisruptionBudget", "istiod")
		// maxUnavailable 1 never blocks a drain, whatever the replica count.
		if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
			t.Errorf("%q: PDB minAvailable %v maxUnavailable %v, want maxUnavailable 1 only", sets, pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
		}
		if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
			t.Errorf("%q: unhealthyPodEvictionPolicy %v, want AlwaysAllow", sets, p)
		}
		pod := get[appsv1.Deployment](t, m, "Deployment", "istiod").Spec.Template
		for k, v := range pdb.Spec.Selector.MatchLabels {
			if pod.Labels[k] != v {
				t.Errorf("PDB selects %s=%s; istiod's pods have %q", k, v, pod.Labels[k])
			}
		}
	}
	if m := render(t, "istiod", "global.defaultPodDisruptionBudget.enabled=false"); len(m.find("PodDisruptionBudget")) != 0 {
		t.Error("global.defaultPodDisruptionBudget.enabled=false still renders a PDB")
	}
}

func TestIstiodSecurityContext(t *testing.T) {
	t.Parallel()
	sc := istiodContainer(t, render(t, "istiod")).SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("istiod securityContext %+v: want non-root, no privilege escalation, read-only root, no capabilities", sc)
	}
}
