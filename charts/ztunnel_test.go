package charts

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ztunnel(t testing.TB, sets ...string) (*appsv1.DaemonSet, *corev1.Container) {
	t.Helper()
	ds := get[appsv1.DaemonSet](t, render(t, "ztunnel", sets...), "DaemonSet", "ztunnel")
	return ds, container(t, &ds.Spec.Template, "istio-proxy")
}

func TestZtunnelObjects(t *testing.T) {
	t.Parallel()
	m := render(t, "ztunnel")
	// ztunnel needs no API access: only its token, which istiod reviews.
	if got := slices.Sorted(slices.Values(m.kinds())); !slices.Equal(got, []string{"DaemonSet/ztunnel", "ServiceAccount/ztunnel"}) {
		t.Errorf("ztunnel chart renders %v, want its ServiceAccount and DaemonSet alone", got)
	}
}

func TestZtunnelDaemonSet(t *testing.T) {
	t.Parallel()
	ds, c := ztunnel(t)
	pod := ds.Spec.Template
	// In its own pod network: a surging second ztunnel on the node must not
	// clash with the first on the node's ports.
	if pod.Spec.HostNetwork || pod.Spec.HostPID {
		t.Error("ztunnel runs in the node's namespaces")
	}
	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxSurge == nil ||
		*u.RollingUpdate.MaxSurge != intstr.FromInt32(1) || u.RollingUpdate.MaxUnavailable == nil || *u.RollingUpdate.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("update strategy %+v, want maxSurge 1, maxUnavailable 0", u)
	}
	for k, v := range map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"} {
		if pod.Annotations[k] != v {
			t.Errorf("pod annotation %s=%q, want %q", k, pod.Annotations[k], v)
		}
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz/ready" || p.HTTPGet.Port.IntValue() != 15021 {
		t.Errorf("readiness probe %+v, want GET /healthz/ready on 15021", p)
	}
	if !slices.Equal(pod.Spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %v, want every taint tolerated", pod.Spec.Tolerations)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}) {
		t.Errorf("securityContext %+v: want unprivileged, drop ALL, add NET_ADMIN SYS_ADMIN NET_RAW", sc)
	}
	if sc != nil && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem) {
		t.Error("ztunnel's root file system is writable")
	}
	if pod.Spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", pod.Spec.PriorityClassName)
	}
	for _, env := range []string{"NODE_NAME", "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == env && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil }) {
			t.Errorf("no %s from the downward API", env)
		}
	}
}

func TestZtunnelIdentity(t *testing.T) {
	t.Parallel()
	ds, c := ztunnel(t)
	pod := ds.Spec.Template
	var token *corev1.ServiceAccountTokenProjection
	var rootCM string
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					token = s.ServiceAccountToken
				}
			}
		}
		if v.ConfigMap != nil {
			rootCM = v.ConfigMap.Name
		}
	}
	if token == nil || token.Audience != "istio-ca" || token.Path != "istio-token" {
		t.Fatalf("projected token %+v, want audience istio-ca at istio-token", token)
	}
	if got := mustArg(t, c.Args, "token-path"); got != "/var/run/secrets/tokens/istio-token" {
		t.Errorf("--token-path=%s", got)
	}
	if rootCM != "istio-ca-root-cert" {
		t.Errorf("root certificate from ConfigMap %q, want istio-ca-root-cert", rootCM)
	}
	if got := mustArg(t, c.Args, "root-cert"); got != "/var/run/secrets/istio/root-cert.pem" {
		t.Errorf("--root-cert=%s", got)
	}
	if got := hostPathOf(t, &pod, "/var/run/ztunnel"); got != "/var/run/ztunnel" {
		t.Errorf("ZDS directory from the node's %s", got)
	}
	if got := mustArg(t, c.Args, "zds-socket"); got != "/var/run/ztunnel/ztunnel.sock" {
		t.Errorf("--zds-socket=%s", got)
	}
}

func TestZtunnelArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sets []string
		want map[string]string
	}{
		{nil, map[string]string{
			"xds-address": "istiod.istio-system.svc:15012", "ca-address": "istiod.istio-system.svc:15012",
			"xds-server-name": "istiod.istio-system.svc", "trust-domain": "cluster.local", "log-level": "info",
			"termination-drain-duration": "25s",
		}},
		{[]string{"multiCluster.clusterName=east"}, map[string]string{"cluster-id": "east"}},
		{[]string{"global.multiCluster.clusterName=west"}, map[string]string{"cluster-id": "west"}},
		{[]string{"global.multiCluster.clusterName=west", "multiCluster.clusterName=east"}, map[string]string{"cluster-id": "east"}},
		{[]string{"istioNamespace=mesh"}, map[string]string{
			"xds-address": "istiod.mesh.svc:15012", "ca-address": "istiod.mesh.svc:15012", "xds-server-name": "istiod.mesh.svc",
		}},
		{[]string{"xdsAddress=istiod-remote.example:15012"}, map[string]string{"xds-address": "istiod-remote.example:15012", "ca-address": "istiod-remote.example:15012"}},
		{[]string{"caAddress=ca.example:15012"}, map[string]string{"xds-address": "istiod.istio-system.svc:15012", "ca-address": "ca.example:15012"}},
		{[]string{"meshConfig.trustDomain=example.org"}, map[string]string{"trust-domain": "example.org"}},
		{[]string{"logLevel=debug"}, map[string]string{"log-level": "debug"}},
	} {
		_, c := ztunnel(t, tc.sets...)
		for flag, want := range tc.want {
			if got := mustArg(t, c.Args, flag); got != want {
				t.Errorf("%q: --%s=%q, want %q", tc.sets, flag, got, want)
			}
		}
	}
	renderFails(t, "ztunnel", `logLevel "trace"`, "logLevel=trace")
	if _, c := ztunnel(t); slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--cluster-id") }) {
		t.Errorf("--cluster-id by default: %q", c.Args)
	}
	_, c := ztunnel(t, "env.LOG_FORMAT=text", "env.ADMIN_ADDRESS=127.0.0.1:15999")
	for name, value := range map[string]string{"LOG_FORMAT": "text", "ADMIN_ADDRESS": "127.0.0.1:15999"} {
		if !slices.Contains(c.Env, corev1.EnvVar{Name: name, Value: value}) {
			t.Errorf("env.%s=%s: container env %v", name, value, c.Env)
		}
	}
}

// TestZtunnelTermination checks ztunnel stops draining before the kubelet
// kills it.
func TestZtunnelTermination(t *testing.T) {
	t.Parallel()
	for grace, drain := range map[string]string{"": "25s", "60": "55s", "3": "1s"} {
		var sets []string
		if grace != "" {
			sets = []string{"terminationGracePeriodSeconds=" + grace}
		}
		ds, c := ztunnel(t, sets...)
		g := ds.Spec.Template.Spec.TerminationGracePeriodSeconds
		if got := mustArg(t, c.Args, "termination-drain-duration"); got != drain || g == nil || (grace == "" && *g != 30) {
			t.Errorf("terminationGracePeriodSeconds %q: grace %v, drain %s, want drain %s", grace, g, got, drain)
		}
	}
}
