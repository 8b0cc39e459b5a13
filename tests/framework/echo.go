//go:build e2e

package framework

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
)

// EchoServer is the YAML of a Deployment of the echo app behind a Service
// of the same name: HTTP on port 80, gRPC on 7070, raw TCP on 9090. Replicas
// are spread over the nodes, one per node while there are enough nodes.
func (c *Cluster) EchoServer(name, version string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: %[3]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s, version: %[2]s}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: %[1]s}
      containers:
      - %[4]s
---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
spec:
  selector: {app: %[1]s}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 7070, targetPort: 7070}
  - {name: tcp, port: 9090, targetPort: 9090}
`, name, version, replicas, c.echoContainer(version))
}

// EchoClient is the YAML of a one-pod Deployment running the echo app,
// used as the source of traffic through Exec. It mounts a projected
// ServiceAccount token with audience istio-ca, as mesh components do.
func (c *Cluster) EchoClient(name, serviceAccount string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[2]s
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s, version: v1}
    spec:
      serviceAccountName: %[2]s
      containers:
      - %[3]s
        volumeMounts:
        - {name: istio-token, mountPath: /var/run/secrets/tokens, readOnly: true}
      volumes:
      - name: istio-token
        projected:
          sources:
          - serviceAccountToken: {audience: istio-ca, expirationSeconds: 43200, path: istio-token}
`, name, serviceAccount, c.echoContainer("v1"))
}

func (c *Cluster) echoContainer(version string) string {
	return fmt.Sprintf(`name: echo
        image: %s
        imagePullPolicy: IfNotPresent
        args: [serve]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: VERSION, value: %q}
        ports:
        - {name: http, containerPort: 8080}
        - {name: grpc, containerPort: 7070}
        - {name: tcp, containerPort: 9090}
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 2`, c.EchoImage, version)
}

// Send runs the echo client inside pod, through kubectl exec, sending count
// requests to url, and returns its summary. The summary is returned even
// when some requests failed; the error reports only failures to run it.
func (ns *Namespace) Send(t testing.TB, pod, url string, count int, extra ...string) echo.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*5*time.Second+time.Minute)
	defer cancel()
	argv := append([]string{"/usr/local/bin/echo", "client", "--url", url, "--count", strconv.Itoa(count)}, extra...)
	out, err := ns.Exec(ctx, pod, "", argv...)
	var s echo.Summary
	if jerr := json.Unmarshal([]byte(strings.TrimSpace(out)), &s); jerr != nil {
		t.Fatalf("echo client in %s to %s: %v (output %q, decode: %v)", pod, url, err, out, jerr)
	}
	return s
}
