package ztunnel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// TestConfigDumpShowsNodeState: each ztunnel's config dump lists the pods
// it serves (and only those), every workload, the policies, its pods'
// certificates, and the connections open through it.
func TestConfigDumpShowsNodeState(t *testing.T) {
	m := newMesh(t, standardPods)
	startApp(t, m, "server", 8080)
	deny := policy("deny-9090", security.Scope_NAMESPACE, security.Action_DENY, &security.Match{DestinationPorts: []uint32{9090}})
	push(t, m, deny)
	long := openEcho(t, m, "client", addr(m, "server", 8080))

	for n, pod := range map[int]string{1: "client", 2: "server"} {
		d, _ := configDump(t, m, n)
		if len(d.Pods) != 1 || d.Pods[0].Name != pod || d.Pods[0].UID != m.UID(pod) ||
			d.Pods[0].Identity != m.Identity(pod) || !slices.Equal(d.Pods[0].IPs, []string{m.IP(pod).String()}) {
			t.Errorf("node%d serves %+v; want only %s (%s, %s)", n, d.Pods, pod, m.Identity(pod), m.IP(pod))
		}
		for _, pod := range []string{"client", "server", "outsider"} {
			want := m.Workload(pod)
			var got struct {
				Name, Node, ServiceAccount, TunnelProtocol string
			}
			raw, ok := d.Workloads[want.GetUid()]
			if ok {
				ok = json.Unmarshal(raw, &got) == nil
			}
			if !ok || got.Name != pod || got.Node != want.GetNode() || got.ServiceAccount != want.GetServiceAccount() ||
				(got.TunnelProtocol == "HBONE") != m.Spec(pod).Mesh {
				t.Errorf("node%d dump lacks workload %s: %s", n, want.GetUid(), raw)
			}
		}
		if p, ok := d.Policies["default/"+deny.GetName()]; !ok || !strings.Contains(string(p), "9090") {
			t.Errorf("node%d dump lacks policy default/%s: %v", n, deny.GetName(), d.Policies)
		}
		if d.serial(m.Identity(pod)) == "" || len(d.Certificates) != 1 {
			t.Errorf("node%d certificates %+v; want only %s's", n, d.Certificates, m.Identity(pod))
		}
	}
	d1, _ := configDump(t, m, 1)
	if !slices.ContainsFunc(d1.Connections, func(c dumpConn) bool {
		return c.Direction == "outbound" && c.Via == "hbone" && c.Dst == addr(m, "server", 8080) &&
			c.SrcIdentity == m.Identity("client") && c.DstIdentity == m.Identity("server")
	}) {
		t.Errorf("node1 connections %+v; want the open outbound one to the server", d1.Connections)
	}
	d2, _ := configDump(t, m, 2)
	if len(d2.Connections) != 1 || d2.Connections[0].Direction != "inbound" || d2.Connections[0].SrcIdentity != m.Identity("client") {
		t.Errorf("node2 connections %+v; want the open inbound one from the client", d2.Connections)
	}
	long.mustPing(t, "after the dumps")
}

// TestLogLevelAndReadiness: POST /logging?level= changes what ztunnel
// logs at once (warnings stop at error, come back at debug), a GET cannot
// change it, and readiness is 503 with the reason until xDS has synced.
func TestLogLevelAndReadiness(t *testing.T) {
	m := newMesh(t, standardPods)
	admin := func(method, query string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		do := meshlab.HTTPGet
		if method == http.MethodPost {
			do = meshlab.HTTPPost
		}
		code, body, err := do(ctx, m.Nodes[0].NS, "http://127.0.0.1:15000/logging"+query)
		if err != nil {
			t.Fatalf("%s /logging%s: %v", method, query, err)
		}
		return code, strings.TrimSpace(string(body))
	}
	expect := func(method, query string, wantCode int, wantBody string) {
		t.Helper()
		if code, body := admin(method, query); code != wantCode || !strings.Contains(body, wantBody) {
			t.Fatalf("%s /logging%s: %d %q; want %d %q", method, query, code, body, wantCode, wantBody)
		}
	}
	// A connection to a port nothing listens on: node2 refuses the tunnel
	// and node1 logs a warning before the client sees it closed.
	warnings := func() int { return len(logLines(m, 1, "level=WARN", "connection refused")) }
	refuse := func() {
		t.Helper()
		expectRefused(t, m, "client", addr(m, "server", 9999))
	}

	expect(http.MethodGet, "", http.StatusOK, "level: info")
	refuse()
	if warnings() != 1 {
		t.Fatalf("at info, %d warnings for one refused connection; want 1", warnings())
	}
	expect(http.MethodPost, "?level=error", http.StatusOK, "level: error")
	refuse()
	if warnings() != 1 {
		t.Fatal("at error, a warning was logged")
	}
	expect(http.MethodGet, "?level=debug", http.StatusMethodNotAllowed, "POST")
	expect(http.MethodPost, "?level=loud", http.StatusBadRequest, "loud")
	expect(http.MethodGet, "", http.StatusOK, "level: error")
	expect(http.MethodPost, "?level=debug", http.StatusOK, "level: debug")
	refuse()
	if warnings() != 2 {
		t.Fatalf("at debug, %d warnings for two refused connections logged at warn level; want 2", warnings())
	}

	// Readiness: a ztunnel started while istiod is away is not ready, and
	// says why, until it has synced.
	expectReady(t, m, 1)
	if err := m.StopZtunnel(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	m.CP.Stop()
	started := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		started <- m.StartZtunnel(ctx, 1)
	}()
	waitFor(t, 10*time.Second, "node1 up but not ready", func() error {
		code, body, err := ready(m, 1)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "xDS") {
			return fmt.Errorf("readiness %d %q; want 503 waiting for xDS", code, body)
		}
		return nil
	})
	if err := m.CP.Start(m.ControlPlaneSocket()); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	expectReady(t, m, 1)
	// The client pod, running all along behind its redirection, is served
	// again, and its tunnels work once its certificate has come.
	d, _ := configDump(t, m, 1)
	if !slices.Contains(d.podNames(), "default/client") {
		t.Fatalf("after a restart during the outage node1 serves %v", d.podNames())
	}
	startApp(t, m, "server", 8080)
	waitFor(t, 15*time.Second, "client reaches server after the restart", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := exchange(ctx, m, "client", addr(m, "server", 8080), "after the restart\n")
		return err
	})
}
