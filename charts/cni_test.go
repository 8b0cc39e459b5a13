package charts

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

var cniClusterRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
}

// cniNamespaceRules are the agent's rights in its own namespace.
var cniNamespaceRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get", "list", "watch"}},
}

// cniDeleteRule is added with repair.deletePods.
var cniDeleteRule = rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"delete"}}

func cniAgent(t testing.TB, sets ...string) (*appsv1.DaemonSet, *corev1.Container) {
	t.Helper()
	ds := get[appsv1.DaemonSet](t, render(t, "cni", sets...), "DaemonSet", "istio-cni-node")
	return ds, container(t, &ds.Spec.Template, "install-cni")
}

func TestCNIDaemonSet(t *testing.T) {
	t.Parallel()
	ds, c := cniAgent(t, "profile=ambient")
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || !pod.HostPID || pod.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v hostPID %v dnsPolicy %s: the agent works in the node's network and PID namespaces", pod.HostNetwork, pod.HostPID, pod.DNSPolicy)
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("securityContext %+v, want privileged", sc)
	}
	if !slices.Equal(pod.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %v, want every taint tolerated", pod.Tolerations)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", pod.PriorityClassName)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.IntValue() != 8000 {
		t.Errorf("readiness probe %+v, want GET /readyz on 8000", p)
	}
	for _, env := range []string{"NODE_NAME", "POD_NAME", "POD_NAMESPACE"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == env && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil }) {
			t.Errorf("no %s from the downward API", env)
		}
	}
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("update strategy %+v, want rolling, one node at a time", u)
	}
}

func TestCNIHostPaths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sets         []string
		binDir, conf string
	}{
		{nil, "/opt/cni/bin", "/etc/cni/net.d"},
		{[]string{"cniBinDir=/home/kubernetes/bin", "cniConfDir=/var/lib/rancher/k3s/agent/etc/cni/net.d"}, "/home/kubernetes/bin", "/var/lib/rancher/k3s/agent/etc/cni/net.d"},
	} {
		ds, c := cniAgent(t, tc.sets...)
		pod := &ds.Spec.Template
		// The agent always sees the node's dirs at the same container paths.
		want := map[string]string{
			"/host/opt/cni/bin": tc.binDir, "/host/etc/cni/net.d": tc.conf,
			"/var/run/istio-cni": "/var/run/istio-cni", "/var/run/ztunnel": "/var/run/ztunnel", "/var/run/netns": "/var/run/netns",
		}
		for mount, host := range want {
			if got := hostPathOf(t, pod, mount); got != host {
				t.Errorf("%q: %s mounts %s, want %s", tc.sets, mount, got, host)
			}
		}
		if got := mustArg(t, c.Args, "cni-bin-dir"); got != "/host/opt/cni/bin" {
			t.Errorf("-cni-bin-dir=%s", got)
		}
		if got := mustArg(t, c.Args, "cni-net-dir"); got != "/host/etc/cni/net.d" {
			t.Errorf("-cni-net-dir=%s", got)
		}
		for _, m := range c.VolumeMounts {
			wantProp := m.MountPath == "/var/run/netns"
			if gotProp := m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer; gotProp != wantProp {
				t.Errorf("%s: mount propagation %v", m.MountPath, m.MountPropagation)
			}
		}
	}
}

func TestCNIArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sets []string
		want map[string]string
	}{
		{nil, map[string]string{"redirect-mode": "auto", "excluded-namespaces": "kube-system", "dns-capture": "false", "repair": "capture", "log-level": "info"}},
		{[]string{"ambient.redirectMode=ebpf"}, map[string]string{"redirect-mode": "ebpf"}},
		{[]string{"ambient.redirectMode=nftables"}, map[string]string{"redirect-mode": "nftables"}},
		{[]string{"ambient.redirectMode=auto"}, map[string]string{"redirect-mode": "auto"}},
		{[]string{"excludeNamespaces={kube-system,monitoring,legacy}"}, map[string]string{"excluded-namespaces": "kube-system,monitoring,legacy"}},
		{[]string{"excludeNamespaces=null"}, map[string]string{"excluded-namespaces": ""}},
		{[]string{"ambient.dnsCapture=true"}, map[string]string{"dns-capture": "true"}},
		{[]string{"repair.labelPods=true"}, map[string]string{"repair": "label"}},
		{[]string{"repair.deletePods=true"}, map[string]string{"repair": "delete"}},
		{[]string{"repair.repairPods=false", "repair.labelPods=true"}, map[string]string{"repair": "label"}},
		{[]string{"logging.level=debug"}, map[string]string{"log-level": "debug"}},
		{[]string{"global.logging.level=default:error"}, map[string]string{"log-level": "error"}},
		{[]string{"global.logging.level=error", "logging.level=warn"}, map[string]string{"log-level": "warn"}},
	} {
		_, c := cniAgent(t, tc.sets...)
		for flag, want := range tc.want {
			if got := mustArg(t, c.Args, flag); got != want {
				t.Errorf("%q: -%s=%q, want %q", tc.sets, flag, got, want)
			}
		}
	}
	renderFails(t, "cni", `ambient.redirectMode "iptables": want auto, ebpf or nftables`, "ambient.redirectMode=iptables")
	renderFails(t, "cni", `ambient.redirectMode ""`, "ambient.redirectMode=")
	renderFails(t, "cni", "choose one", "repair.deletePods=true", "repair.labelPods=true")
	renderFails(t, "cni", "repair.enabled=false is not supported", "repair.enabled=false")
	renderFails(t, "cni", "set one of", "repair.repairPods=false")
	renderFails(t, "cni", `log level "verbose"`, "logging.level=verbose")
}

func TestCNIRBAC(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sets []string
		want []rbacv1.PolicyRule
	}{
		{nil, cniClusterRules},
		{[]string{"repair.labelPods=true"}, cniClusterRules},
		// Only deletePods gives the agent the right to delete pods.
		{[]string{"repair.deletePods=true"}, slices.Insert(slices.Clone(cniClusterRules), 1, cniDeleteRule)},
	} {
		m := render(t, "cni", tc.sets...)
		name := "istio-cni-" + testNamespace
		if cr := get[rbacv1.ClusterRole](t, m, "ClusterRole", name); !rulesEqual(cr.Rules, tc.want) {
			t.Errorf("%q: rules\n%v\nwant\n%v", tc.sets, cr.Rules, tc.want)
		}
		b := get[rbacv1.ClusterRoleBinding](t, m, "ClusterRoleBinding", name)
		checkBinding(t, b.RoleRef, b.Subjects, "ClusterRole", name, "istio-cni")
		role := get[rbacv1.Role](t, m, "Role", "istio-cni")
		if role.Namespace != testNamespace || !rulesEqual(role.Rules, cniNamespaceRules) {
			t.Errorf("%q: Role in %q with rules\n%v\nwant, in %s\n%v", tc.sets, role.Namespace, role.Rules, testNamespace, cniNamespaceRules)
		}
		rb := get[rbacv1.RoleBinding](t, m, "RoleBinding", "istio-cni")
		checkBinding(t, rb.RoleRef, rb.Subjects, "Role", "istio-cni", "istio-cni")
	}
	if m, _ := renderChart(t, "cni", "other-mesh"); !strings.HasSuffix(m.find("ClusterRole")[0].Name, "-other-mesh") {
		t.Errorf("the ClusterRole's name does not carry the release namespace: %s", m.find("ClusterRole")[0].Name)
	}
}
