package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestIstioNamesAndLabels(t *testing.T) {
	m := New("1.0.0-dev")
	l := Labels{
		Reporter: "destination", SourceWorkload: "sleep", SourceNamespace: "foo", SourcePrincipal: "spiffe://cluster.local/ns/foo/sa/sleep",
		DestinationWorkload: "echo", DestinationNamespace: "foo", DestinationService: "echo.foo.svc.cluster.local",
		DestinationPrincipal: "spiffe://cluster.local/ns/foo/sa/echo", SecurityPolicy: "mutual_tls",
	}
	m.Opened(l)
	m.Closed(l, 1200, 3400)
	denied := l
	denied.SourcePrincipal, denied.ResponseFlags = "spiffe://cluster.local/ns/bar/sa/curl", "DENY"
	m.Opened(denied)
	m.Closed(denied, 0, 0)

	out := scrape(t, m)
	labels := `connection_security_policy="mutual_tls",destination_principal="spiffe://cluster.local/ns/foo/sa/echo",destination_service="echo.foo.svc.cluster.local",destination_workload="echo",destination_workload_namespace="foo",reporter="destination",request_protocol="tcp",response_flags="-",source_principal="spiffe://cluster.local/ns/foo/sa/sleep",source_workload="sleep",source_workload_namespace="foo"`
	for _, want := range []string{
		"istio_tcp_connections_opened_total{" + labels + "} 1",
		"istio_tcp_connections_closed_total{" + labels + "} 1",
		"istio_tcp_sent_bytes_total{" + labels + "} 1200",
		"istio_tcp_received_bytes_total{" + labels + "} 3400",
		`response_flags="DENY",source_principal="spiffe://cluster.local/ns/bar/sa/curl"`,
		`istio_build{component="ztunnel",tag="1.0.0-dev"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s\n%s", want, out)
		}
	}
}

func TestUnknownLabelsArePlaintextDefaults(t *testing.T) {
	m := New("dev")
	m.Opened(Labels{Reporter: "destination"})
	out := scrape(t, m)
	if !strings.Contains(out, `connection_security_policy="unknown"`) || !strings.Contains(out, `source_principal="unknown"`) {
		t.Fatalf("plaintext connection labels:\n%s", out)
	}
}
