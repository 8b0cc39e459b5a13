package ztunnel_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// strictPolicy is how istiod tells ztunnel a namespace's PeerAuthentication
// is STRICT: deny connections that carry no principal.
func strictPolicy() *security.Authorization {
	return policy("istio_converted_static_strict", security.Scope_NAMESPACE, security.Action_DENY,
		&security.Match{NotPrincipals: []*security.StringMatch{presenceMatch()}})
}

// TestStrictRejectsPlaintextPermissiveAccepts: a pod outside the mesh
// reaches a mesh pod in plaintext while the namespace is PERMISSIVE, is
// refused once it is STRICT (while mesh clients carry on), and gets in
// again when STRICT is lifted.
func TestStrictRejectsPlaintextPermissiveAccepts(t *testing.T) {
	m := newMesh(t, standardPods)
	app := startApp(t, m, "server", 8080)
	target := addr(m, "server", 8080)

	mustExchange(t, m, "outsider", target, "plaintext while permissive\n")
	mustExchange(t, m, "client", target, "mtls while permissive\n")
	// A plaintext source is known by its address only, but known.
	waitFor(t, 5*time.Second, "the plaintext connection counted with its source workload", func() error {
		if n := metric(t, m, 2, "istio_tcp_connections_opened_total", map[string]string{"reporter": "destination",
			"connection_security_policy": "unknown", "source_workload": "outsider", "source_workload_namespace": "default"}); n != 1 {
			return fmt.Errorf("counted %v, want 1", n)
		}
		return nil
	})

	strict := strictPolicy()
	push(t, m, strict)
	before := app.conns.Load()
	expectRefused(t, m, "outsider", target)
	if n := app.conns.Load() - before; n != 0 {
		t.Fatalf("the refused plaintext connection reached the app (%d connections)", n)
	}
	line := waitLog(t, m, 2, "connection refused", "direction=inbound_plaintext", "src="+m.IP("outsider").String()+":")
	if !strings.Contains(line, "policy=default/"+strict.GetName()) || !strings.Contains(line, "response_flags=DENY") {
		t.Errorf("refusal does not name the STRICT policy and DENY:\n%s", line)
	}
	mustExchange(t, m, "client", target, "mtls while strict\n")

	m.CP.RemoveAuthorization("default/" + strict.GetName())
	waitAcked(t, m, 10*time.Second)
	mustExchange(t, m, "outsider", target, "plaintext while permissive again\n")
}

// TestL4PolicyByPrincipalAndPort: an ALLOW policy selecting the server
// lets one principal in on one port; other ports and other principals are
// refused, a DENY on the port wins over the ALLOW, and the server's
// ztunnel counts the refusals and the carried bytes with both principals.
func TestL4PolicyByPrincipalAndPort(t *testing.T) {
	m := newMesh(t, []meshlab.PodSpec{
		{Name: "client", Node: 1, Mesh: true},
		{Name: "other", Node: 1, Mesh: true},
		{Name: "server", Node: 2, Mesh: true},
	})
	startApp(t, m, "server", 8080)
	startApp(t, m, "server", 9090)
	to8080, to9090 := addr(m, "server", 8080), addr(m, "server", 9090)

	// Bytes as Istio counts them, for both reporters: received is what the
	// source sent (the request), sent what the destination sent back.
	request := strings.Repeat("r", 1000)
	greeting := mustExchange(t, m, "client", to8080, request)
	response := len(greeting) + 1 + len(request)
	ok := map[string]string{
		"source_principal":      m.Identity("client"),
		"destination_principal": m.Identity("server"),
		"response_flags":        "-",
	}
	for _, rep := range []struct {
		node     int
		reporter string
	}{{2, "destination"}, {1, "source"}} {
		labels := with(ok, "reporter", rep.reporter)
		waitFor(t, 5*time.Second, rep.reporter+" reporter's byte counts", func() error {
			sent := metric(t, m, rep.node, "istio_tcp_sent_bytes_total", labels)
			received := metric(t, m, rep.node, "istio_tcp_received_bytes_total", labels)
			if received != float64(len(request)) || sent != float64(response) {
				return fmt.Errorf("node%d: received %v sent %v, want received %d (request) sent %d (response)",
					rep.node, received, sent, len(request), response)
			}
			return nil
		})
	}

	// Without policy everyone gets in: the refusals below are the policy's.
	mustExchange(t, m, "client", to9090, "no policy yet\n")
	mustExchange(t, m, "other", to8080, "no policy yet\n")

	// A dry-run DENY (istio.io/dry-run) is evaluated and logged, never
	// enforced.
	trial := policy("trial-deny-9090", security.Scope_NAMESPACE, security.Action_DENY,
		&security.Match{DestinationPorts: []uint32{9090}})
	trial.DryRun = true
	push(t, m, trial)
	mustExchange(t, m, "client", to9090, "dry run\n")
	waitLog(t, m, 2, "connection complete", "src_identity="+m.Identity("client"), "dry_run_result=deny", "dry_run_policy=default/trial-deny-9090")

	allow := policy("allow-client-8080", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW,
		&security.Match{Principals: []*security.StringMatch{exactMatch(principal(m, "client"))}},
		&security.Match{DestinationPorts: []uint32{8080}})
	server := m.Workload("server")
	server.AuthorizationPolicies = []string{"default/" + allow.GetName()}
	m.CP.SetWorkload(server)
	push(t, m, allow)

	mustExchange(t, m, "client", to8080, "allowed\n")
	expectRefused(t, m, "client", to9090)
	expectRefused(t, m, "other", to8080)
	denied := func(pod string) float64 {
		return metric(t, m, 2, "istio_tcp_connections_opened_total", map[string]string{
			"reporter": "destination", "response_flags": "DENY",
			"source_principal": m.Identity(pod), "destination_principal": m.Identity("server"),
		})
	}
	waitFor(t, 5*time.Second, "refusals counted by the server's ztunnel", func() error {
		if c, o := denied("client"), denied("other"); c != 1 || o != 1 {
			return fmt.Errorf("DENY opened: client %v, other %v; want 1 each", c, o)
		}
		return nil
	})

	// A DENY on the port wins over the ALLOW that matches.
	push(t, m, policy("deny-8080", security.Scope_NAMESPACE, security.Action_DENY,
		&security.Match{DestinationPorts: []uint32{8080}}))
	expectRefused(t, m, "client", to8080)
	line := waitLog(t, m, 2, "connection refused", "src_identity="+m.Identity("client"), "policy=default/deny-8080")
	if !strings.Contains(line, "response_flags=DENY") {
		t.Errorf("refusal by the DENY policy:\n%s", line)
	}
	waitFor(t, 5*time.Second, "the DENY refusal counted", func() error {
		if c := denied("client"); c != 2 {
			return fmt.Errorf("DENY opened for client: %v, want 2", c)
		}
		return nil
	})
}

// with returns a copy of labels with k set to v.
func with(labels map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for lk, lv := range labels {
		if lk != k {
			out[lk] = lv
		}
	}
	return out
}
