//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/tests/framework"
)

// TestIstiodWaypointsAndServiceEntries runs istiod against the cluster with
// the Istio and Gateway API CRDs installed and checks, over Delta ADS, that
// a Service labelled istio.io/use-waypoint points at its waypoint's service
// name while the Gateway does not exist (so ztunnel refuses its traffic),
// then at the address the waypoint Gateway reports once it has one, and
// that a ServiceEntry arrives as a service and its endpoint as a workload.
func TestIstiodWaypointsAndServiceEntries(t *testing.T) {
	c := framework.Get(t)
	c.InstallCRDs(t)
	ctx := t.Context()

	runID := randomHex(4)
	selected := map[string]string{"e2e.mesh/istiod-workloads": runID}
	system := c.NewNamespace(t, "istiod-wl", selected)
	app := c.NewNamespace(t, "istiod-wl-app", map[string]string{"e2e.mesh/istiod-workloads": runID, "istio.io/dataplane-mode": "ambient"})

	p := startIstiod(t, buildIstiod(t), "-kubeconfig", c.Kubeconfig, "-namespace", system.Name,
		"-root-namespace-selector", "e2e.mesh/istiod-workloads="+runID, "-node-accounts", system.Name+"/ztunnel",
		"-grpc-addr", "127.0.0.1:0", "-secure-grpc-addr", "127.0.0.1:0", "-ready-addr", "127.0.0.1:0",
		"-monitoring-addr", "127.0.0.1:0", "-log-level", "debug")
	p.waitReady(t, time.Minute)
	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ads := openADS(t, p, "plaintext", cc)
	ads.waitSynced(t, 30*time.Second)

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"istio.io/use-waypoint": "wp"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := c.Client.CoreV1().Services(app.Name).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service: %v", err)
	}
	svcName := app.Name + "/web." + app.Name + ".svc.cluster.local"
	waypointOf := func(st map[string]*workloadapi.Address) *workloadapi.GatewayAddress {
		return st[svcName].GetService().GetWaypoint()
	}
	ads.waitFor(t, "service points at the missing waypoint's service name", time.Minute, func(st map[string]*workloadapi.Address) bool {
		return waypointOf(st).GetHostname().GetHostname() == "wp."+app.Name+".svc.cluster.local"
	})

	app.Apply(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: wp
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`)
	// No controller deploys the waypoint here; report an address as one
	// would once the waypoint is ready.
	patchCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if out, err := c.Kubectl(patchCtx, "", "patch", "-n", app.Name, "gateways.gateway.networking.k8s.io", "wp",
		"--subresource=status", "--type=merge", "-p", `{"status":{"addresses":[{"type":"IPAddress","value":"10.96.250.250"}]}}`); err != nil {
		t.Fatalf("patch gateway status: %v\n%s", err, out)
	}
	ads.waitFor(t, "service points at the waypoint's address", time.Minute, func(st map[string]*workloadapi.Address) bool {
		wp := waypointOf(st)
		return bytes.Equal(wp.GetAddress().GetAddress(), []byte{10, 96, 250, 250}) && wp.GetHboneMtlsPort() == 15008
	})

	app.Apply(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [api.e2e.example.com]
  addresses: [240.240.1.1]
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: STATIC
  endpoints:
  - address: 192.0.2.10
`)
	seName := app.Name + "/api.e2e.example.com"
	epName := fmt.Sprintf("Kubernetes/networking.istio.io/ServiceEntry/%s/ext/192.0.2.10", app.Name)
	ads.waitFor(t, "ServiceEntry service and endpoint", time.Minute, func(st map[string]*workloadapi.Address) bool {
		s, w := st[seName].GetService(), st[epName].GetWorkload()
		return len(s.GetAddresses()) == 1 && bytes.Equal(s.GetAddresses()[0].GetAddress(), []byte{240, 240, 1, 1}) &&
			w != nil && w.GetServices()[seName].GetPorts()[0].GetServicePort() == 443
	})

	if _, err := c.Kubectl(patchCtx, "", "delete", "-n", app.Name, "serviceentries.networking.istio.io", "ext"); err != nil {
		t.Fatalf("delete ServiceEntry: %v", err)
	}
	ads.waitFor(t, "ServiceEntry removed", time.Minute, func(st map[string]*workloadapi.Address) bool {
		_, s := st[seName]
		_, w := st[epName]
		return !s && !w
	})
}
