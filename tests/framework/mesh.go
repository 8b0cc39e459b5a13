//go:build e2e

package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MeshOptions says how InstallMesh deploys the mesh. The zero value is
// the images the Makefile builds, the redirection mode the node agent
// picks, and info logs.
type MeshOptions struct {
	// PilotImage, ZtunnelImage and InstallCNIImage default to PILOT_IMAGE,
	// ZTUNNEL_IMAGE and INSTALL_CNI_IMAGE, else $HUB/<name>:$TAG.
	PilotImage, ZtunnelImage, InstallCNIImage string
	// RedirectMode is the node agent's -redirect-mode: auto, ebpf or nftables.
	RedirectMode string
	// LogLevel of every component: debug, info, warn or error.
	LogLevel string
	// DNSCapture sends enrolled pods' DNS to ztunnel.
	DNSCapture bool
}

// Mesh is the mesh installed by InstallMesh: istiod (Deployment and
// Service "istiod"), ztunnel and istio-cni-node (DaemonSets), all in
// Namespace.
type Mesh struct {
	Namespace *Namespace
	cluster   *Cluster
	// prefix names the cluster-scoped RBAC objects of this install.
	prefix  string
	removed bool
}

// meshValues fills meshTemplate.
type meshValues struct {
	Namespace, Prefix                         string
	PilotImage, ZtunnelImage, InstallCNIImage string
	RedirectMode, LogLevel                    string
	DNSCapture                                bool
}

// meshTemplate is the mesh's YAML, shaped like Istio's ambient profile:
// istiod serves xDS and the CA on 15012 as istiod.<namespace>.svc; the
// node agent runs privileged in the node's network and PID namespaces
// with the node's CNI dirs mounted under /host; ztunnel runs in a pod
// network of its own and gets the pods' network namespaces over ZDS on a
// node directory it shares with the agent.
var meshTemplate = template.Must(template.New("mesh").Parse(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: istiod
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ztunnel
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: istio-cni
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{.Prefix}}-istiod
rules:
- apiGroups: [""]
  resources: [pods, services, namespaces, nodes, endpoints, configmaps]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, update, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
- apiGroups: [security.istio.io, networking.istio.io, gateway.networking.k8s.io]
  resources: ["*"]
  verbs: [get, list, watch]
- apiGroups: [security.istio.io, networking.istio.io, gateway.networking.k8s.io]
  resources: ["*/status"]
  verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{.Prefix}}-istiod
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {{.Prefix}}-istiod}
subjects:
- {kind: ServiceAccount, name: istiod, namespace: {{.Namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: istiod
rules:
# The CA's key pair lives in a Secret of istiod's own namespace.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: istiod
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: istiod}
subjects:
- {kind: ServiceAccount, name: istiod, namespace: {{.Namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{.Prefix}}-istio-cni
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# To tell an uninstall (its DaemonSet gone) from a restart.
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{.Prefix}}-istio-cni
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {{.Prefix}}-istio-cni}
subjects:
- {kind: ServiceAccount, name: istio-cni, namespace: {{.Namespace}}}
---
apiVersion: v1
kind: Service
metadata:
  name: istiod
  labels: {app: istiod}
spec:
  selector: {app: istiod}
  ports:
  - {name: grpc-xds, port: 15010, targetPort: 15010}
  - {name: https-dns, port: 15012, targetPort: 15012}
  - {name: http-monitoring, port: 15014, targetPort: 15014}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istiod
  labels: {app: istiod}
spec:
  replicas: 1
  selector:
    matchLabels: {app: istiod}
  template:
    metadata:
      labels: {app: istiod}
    spec:
      serviceAccountName: istiod
      terminationGracePeriodSeconds: 5
      containers:
      - name: discovery
        image: {{.PilotImage}}
        imagePullPolicy: IfNotPresent
        args:
        - -namespace={{.Namespace}}
        - -node-accounts={{.Namespace}}/ztunnel
        # Only this install's namespace gets the root certificate
        # ConfigMap, so another istiod in the cluster (a test's own) does
        # not fight over the others.
        - -root-namespace-selector=mesh.e2e/install={{.Namespace}}
        - -log-level={{.LogLevel}}
        ports:
        - {name: grpc-xds, containerPort: 15010}
        - {name: https-dns, containerPort: 15012}
        - {name: http-ready, containerPort: 8080}
        - {name: http-monitoring, containerPort: 15014}
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 2
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: istio-cni-node
  labels: {app: istio-cni-node}
spec:
  selector:
    matchLabels: {app: istio-cni-node}
  template:
    metadata:
      labels: {app: istio-cni-node}
    spec:
      serviceAccountName: istio-cni
      hostNetwork: true
      # The agent finds running pods' network namespaces through /proc.
      hostPID: true
      dnsPolicy: ClusterFirstWithHostNet
      terminationGracePeriodSeconds: 5
      tolerations:
      - operator: Exists
      containers:
      - name: install-cni
        image: {{.InstallCNIImage}}
        imagePullPolicy: IfNotPresent
        args:
        - -cni-net-dir=/host/etc/cni/net.d
        - -cni-bin-dir=/host/opt/cni/bin
        - -redirect-mode={{.RedirectMode}}
        - -log-level={{.LogLevel}}
        - -dns-capture={{.DNSCapture}}
        env:
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        readinessProbe:
          httpGet: {path: /readyz, port: 8000}
          periodSeconds: 2
        securityContext:
          privileged: true
        volumeMounts:
        - {name: cni-net-dir, mountPath: /host/etc/cni/net.d}
        - {name: cni-bin-dir, mountPath: /host/opt/cni/bin}
        - {name: cni-run, mountPath: /var/run/istio-cni}
        - {name: ztunnel-run, mountPath: /var/run/ztunnel}
        # Sandboxes created after the agent started bind their netns
        # handles here; HostToContainer lets the agent open them.
        - {name: netns, mountPath: /var/run/netns, mountPropagation: HostToContainer}
      volumes:
      - {name: cni-net-dir, hostPath: {path: /etc/cni/net.d}}
      - {name: cni-bin-dir, hostPath: {path: /opt/cni/bin}}
      - {name: cni-run, hostPath: {path: /var/run/istio-cni, type: DirectoryOrCreate}}
      - {name: ztunnel-run, hostPath: {path: /var/run/ztunnel, type: DirectoryOrCreate}}
      - {name: netns, hostPath: {path: /var/run/netns, type: DirectoryOrCreate}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: ztunnel
  labels: {app: ztunnel}
spec:
  selector:
    matchLabels: {app: ztunnel}
  template:
    metadata:
      labels: {app: ztunnel}
    spec:
      serviceAccountName: ztunnel
      terminationGracePeriodSeconds: 5
      tolerations:
      - operator: Exists
      containers:
      - name: istio-proxy
        image: {{.ZtunnelImage}}
        imagePullPolicy: IfNotPresent
        args:
        - --xds-address=istiod.{{.Namespace}}.svc:15012
        - --xds-server-name=istiod.{{.Namespace}}.svc
        - --root-cert=/var/run/secrets/istio/root-cert.pem
        - --token-path=/var/run/secrets/tokens/istio-token
        - --zds-socket=/var/run/ztunnel/ztunnel.sock
        - --log-level={{.LogLevel}}
        env:
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: INSTANCE_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        ports:
        - {name: http-ready, containerPort: 15021}
        - {name: http-metrics, containerPort: 15020}
        readinessProbe:
          httpGet: {path: /healthz/ready, port: 15021}
          periodSeconds: 2
        # Listeners inside other pods' network namespaces (setns) with
        # transparent sockets; no CAP_SYS_RESOURCE, which this cluster's
        # runtime cannot grant.
        securityContext:
          privileged: false
          capabilities:
            drop: [ALL]
            add: [NET_ADMIN, SYS_ADMIN, NET_RAW]
        volumeMounts:
        - {name: ztunnel-run, mountPath: /var/run/ztunnel}
        - {name: istiod-ca, mountPath: /var/run/secrets/istio, readOnly: true}
        - {name: istio-token, mountPath: /var/run/secrets/tokens, readOnly: true}
      volumes:
      - {name: ztunnel-run, hostPath: {path: /var/run/ztunnel, type: DirectoryOrCreate}}
      - name: istiod-ca
        configMap: {name: istio-ca-root-cert}
      - name: istio-token
        projected:
          sources:
          - serviceAccountToken: {audience: istio-ca, expirationSeconds: 43200, path: istio-token}
`))

// MeshYAML renders the mesh's manifests for a namespace; prefix names its
// cluster-scoped RBAC objects.
func MeshYAML(namespace, prefix string, o MeshOptions) (string, error) {
	var b strings.Builder
	err := meshTemplate.Execute(&b, meshValues{
		Namespace: namespace, Prefix: prefix,
		PilotImage: o.PilotImage, ZtunnelImage: o.ZtunnelImage, InstallCNIImage: o.InstallCNIImage,
		RedirectMode: o.RedirectMode, LogLevel: o.LogLevel, DNSCapture: o.DNSCapture,
	})
	return b.String(), err
}

func (o MeshOptions) withDefaults() MeshOptions {
	image := func(v, envName, name string) string {
		if v != "" {
			return v
		}
		return env(envName, env("HUB", "localhost/mesh")+"/"+name+":"+env("TAG", "dev"))
	}
	o.PilotImage = image(o.PilotImage, "PILOT_IMAGE", "pilot")
	o.ZtunnelImage = image(o.ZtunnelImage, "ZTUNNEL_IMAGE", "ztunnel")
	o.InstallCNIImage = image(o.InstallCNIImage, "INSTALL_CNI_IMAGE", "install-cni")
	if o.RedirectMode == "" {
		o.RedirectMode = "auto"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	return o
}

// meshWorkloads are what InstallMesh waits for, in the order they become
// ready: ztunnel needs istiod's xDS and the agent's ZDS snapshot.
var meshWorkloads = []string{"deployment/istiod", "daemonset/istio-cni-node", "daemonset/ztunnel"}

// InstallMesh deploys the mesh into a new namespace (with the Istio and
// Gateway API CRDs) and waits until istiod, the node agent on every node
// and ztunnel on every node are ready. On failure it prints the
// namespace's pods, events and logs. The mesh is removed when the test
// ends, or earlier by Remove.
//
// The node agent is node-wide (it adds the istio-cni plugin to every
// node's CNI config), so only one mesh may be installed at a time.
func (c *Cluster) InstallMesh(t testing.TB, o MeshOptions) *Mesh {
	t.Helper()
	c.InstallCRDs(t)
	o = o.withDefaults()
	ns := c.NewNamespace(t, "mesh", nil)
	// The label lets istiod's root certificate publisher pick out its
	// own namespace (see -root-namespace-selector in the template).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Kubectl(ctx, "", "label", "namespace", ns.Name, "mesh.e2e/install="+ns.Name); err != nil {
		t.Fatalf("label namespace: %v", err)
	}
	m := &Mesh{Namespace: ns, cluster: c, prefix: ns.Name}
	yaml, err := MeshYAML(ns.Name, m.prefix, o)
	if err != nil {
		t.Fatalf("render mesh manifests: %v", err)
	}
	// Registered after the namespace's own cleanup, so it runs first:
	// the node agent must see its DaemonSet go while it can still ask.
	t.Cleanup(func() { m.Remove(t) })
	ns.Apply(t, yaml)
	for _, w := range meshWorkloads {
		ns.WaitRollout(t, w, 3*time.Minute)
	}
	return m
}

// Remove uninstalls the mesh: the node agents first, so that each, seeing
// its DaemonSet gone, takes the istio-cni plugin out of its node's CNI
// config (else every new pod would fail closed), then ztunnel and istiod,
// then the cluster-scoped RBAC. The namespace itself goes with the test.
// Calling it again does nothing.
func (m *Mesh) Remove(t testing.TB) {
	t.Helper()
	if m.removed {
		return
	}
	m.removed = true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := m.Namespace
	var failures []string
	for _, app := range []string{"istio-cni-node", "ztunnel", "istiod"} {
		kind := "daemonset/"
		if app == "istiod" {
			kind = "deployment/"
		}
		if _, err := m.cluster.Kubectl(ctx, "", "delete", "-n", ns.Name, kind+app, "--ignore-not-found"); err != nil {
			failures = append(failures, err.Error())
			continue
		}
		if err := m.waitPodsGone(ctx, app); err != nil {
			failures = append(failures, err.Error())
		}
	}
	if left := m.pluginLeft(); len(left) > 0 {
		failures = append(failures, fmt.Sprintf("the istio-cni plugin is still in %s: new pods there will fail until it is removed", strings.Join(left, ", ")))
	}
	for _, kind := range []string{"clusterrolebinding", "clusterrole"} {
		for _, name := range []string{m.prefix + "-istiod", m.prefix + "-istio-cni"} {
			if _, err := m.cluster.Kubectl(ctx, "", "delete", kind, name, "--ignore-not-found"); err != nil {
				failures = append(failures, err.Error())
			}
		}
	}
	if len(failures) > 0 {
		t.Errorf("remove the mesh from %s:\n%s\n%s", ns.Name, strings.Join(failures, "\n"), ns.Dump())
	}
}

// waitPodsGone waits until no pod of the component is left.
func (m *Mesh) waitPodsGone(ctx context.Context, app string) error {
	for {
		list, err := m.cluster.Client.CoreV1().Pods(m.Namespace.Name).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err == nil && len(list.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			n := 0
			if list != nil {
				n = len(list.Items)
			}
			return fmt.Errorf("%d %s pods still there (last error: %v)", n, app, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// pluginLeft lists the local cluster's CNI config files that still name
// the istio-cni plugin; it knows nothing of other clusters.
func (m *Mesh) pluginLeft() []string {
	if m.cluster.local == nil {
		return nil
	}
	confs, _ := filepath.Glob(filepath.Join(m.cluster.local.StateDir, "nodes", "*", "etc-cni-net.d", "*.conflist"))
	var left []string
	for _, f := range confs {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), `"istio-cni"`) {
			left = append(left, f)
		}
	}
	return left
}

// Pods returns the mesh's running pods of one component ("istiod",
// "ztunnel" or "istio-cni-node") by node name.
func (m *Mesh) Pods(t testing.TB, app string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := m.cluster.Client.CoreV1().Pods(m.Namespace.Name).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatalf("list %s pods: %v", app, err)
	}
	out := map[string]string{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p.Name
		}
	}
	return out
}

// Logs returns the logs of a component's running pods by node name, for
// tests that look for what ztunnel or the node agent reported.
func (m *Mesh) Logs(t testing.TB, app string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string]string{}
	for node, pod := range m.Pods(t, app) {
		logs, err := m.Namespace.Logs(ctx, pod, "")
		if err != nil {
			t.Fatalf("logs of %s: %v", pod, err)
		}
		out[node] = logs
	}
	return out
}
