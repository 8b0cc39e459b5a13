package framework

import "fmt"

// EchoServerYAML is the YAML of a Deployment of the echo app behind a Service
// of the same name: HTTP on port 80, gRPC on 7070, raw TCP on 9090. Replicas
// are spread over the nodes, one per node while there are enough nodes.
func EchoServerYAML(image, name, version string, replicas int) string {
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
`, name, version, replicas, echoContainer(image, version))
}

// EchoClientYAML is the YAML of a one-pod Deployment running the echo app,
// used as the source of traffic through Exec. It mounts a projected
// ServiceAccount token with audience istio-ca, as mesh components do.
func EchoClientYAML(image, name, serviceAccount string) string {
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
`, name, serviceAccount, echoContainer(image, "v1"))
}

func echoContainer(image, version string) string {
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
          periodSeconds: 2`, image, version)
}
