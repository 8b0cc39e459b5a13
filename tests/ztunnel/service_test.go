package ztunnel_test

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// TestServiceVIPReachesEndpoint: a connection to a service's virtual IP and
// port reaches the app on its endpoint's target port, over HBONE, and is
// counted against the service.
func TestServiceVIPReachesEndpoint(t *testing.T) {
	m := newMesh(t, standardPods)
	app := startApp(t, m, "server", 8080)
	vip := netip.MustParseAddr("10.96.0.50")
	const hostname = "server.default.svc.cluster.local"
	m.CP.SetService(&workloadapi.Service{
		Name:      "server",
		Namespace: "default",
		Hostname:  hostname,
		Addresses: []*workloadapi.NetworkAddress{{Address: vip.AsSlice()}},
		Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}},
	})
	w := m.Workload("server")
	w.Services = map[string]*workloadapi.PortList{
		"default/" + hostname: {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}},
	}
	m.CP.SetWorkload(w)
	push(t, m)

	greeting := mustExchange(t, m, "client", vip.String()+":80", "to the service\n")
	if !strings.HasPrefix(greeting, "from "+m.IP("server").String()+":") {
		t.Fatalf("greeting %q; want the server's app, reached by its ztunnel", greeting)
	}
	if n := app.conns.Load(); n != 1 {
		t.Fatalf("server app took %d connections, want 1", n)
	}
	// Both ends count it with Istio's labels: the workloads' canonical
	// service and revision (and app and version), their cluster, and the
	// service; the destination, which sees only its own address and port,
	// finds the service by the port it forwards to.
	labels := map[string]string{
		"destination_service": hostname, "destination_service_name": "server", "destination_service_namespace": "default",
		"source_workload": "client", "source_canonical_service": "client", "source_app": "client",
		"source_canonical_revision": "latest", "source_version": "latest", "source_cluster": "Kubernetes",
		"source_principal": m.Identity("client"), "source_workload_namespace": "default",
		"destination_workload": "server", "destination_canonical_service": "server", "destination_app": "server",
		"destination_canonical_revision": "latest", "destination_version": "latest", "destination_cluster": "Kubernetes",
		"destination_principal": m.Identity("server"), "destination_workload_namespace": "default",
		"connection_security_policy": "mutual_tls", "request_protocol": "tcp",
	}
	for n, reporter := range map[int]string{1: "source", 2: "destination"} {
		want := maps.Clone(labels)
		want["reporter"] = reporter
		waitFor(t, 5*time.Second, "the connection counted against the service by the "+reporter, func() error {
			if n := metric(t, m, n, "istio_tcp_connections_opened_total", want); n != 1 {
				return fmt.Errorf("%v connections opened with %v", n, want)
			}
			return nil
		})
	}
}

// TestPassthroughToPodOutsideMesh: a mesh pod reaches a pod outside the
// mesh as plain TCP, dialled from its own namespace so the app sees the
// client's address.
func TestPassthroughToPodOutsideMesh(t *testing.T) {
	m := newMesh(t, standardPods)
	app := startApp(t, m, "outsider", 8080)
	greeting := mustExchange(t, m, "client", addr(m, "outsider", 8080), "to a pod outside the mesh\n")
	if !strings.HasPrefix(greeting, "from "+m.IP("client").String()+":") {
		t.Fatalf("outsider's app saw %q; want the client's own address", greeting)
	}
	if n := app.conns.Load(); n != 1 {
		t.Fatalf("outsider's app took %d connections, want 1", n)
	}
	line := waitLog(t, m, 1, "connection complete", "dst="+addr(m, "outsider", 8080))
	if !strings.Contains(line, "via=passthrough") {
		t.Fatalf("not carried as passthrough:\n%s", line)
	}
}
