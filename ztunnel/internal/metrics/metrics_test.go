package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
		Reporter: "destination",
		Source: Peer{Workload: "sleep", Namespace: "foo", Principal: "spiffe://cluster.local/ns/foo/sa/sleep",
			CanonicalService: "sleep", CanonicalRevision: "v1", Cluster: "Kubernetes"},
		Destination: Peer{Workload: "echo-v2", Namespace: "foo", Principal: "spiffe://cluster.local/ns/foo/sa/echo",
			CanonicalService: "echo", CanonicalRevision: "v2", Cluster: "Kubernetes"},
		DestinationService: "echo.foo.svc.cluster.local", DestinationServiceName: "echo", DestinationServiceNamespace: "foo",
		SecurityPolicy: "mutual_tls",
	}
	m.Opened(l)
	m.Closed(l, 1200, 3400)
	denied := l
	denied.Source.Principal, denied.ResponseFlags = "spiffe://cluster.local/ns/bar/sa/curl", "DENY"
	m.Opened(denied)
	m.Closed(denied, 0, 0)

	out := scrape(t, m)
	labels := `connection_security_policy="mutual_tls",` +
		`destination_app="echo",destination_canonical_revision="v2",destination_canonical_service="echo",destination_cluster="Kubernetes",` +
		`destination_principal="spiffe://cluster.local/ns/foo/sa/echo",` +
		`destination_service="echo.foo.svc.cluster.local",destination_service_name="echo",destination_service_namespace="foo",` +
		`destination_version="v2",destination_workload="echo-v2",destination_workload_namespace="foo",` +
		`reporter="destination",request_protocol="tcp",response_flags="-",` +
		`source_app="sleep",source_canonical_revision="v1",source_canonical_service="sleep",source_cluster="Kubernetes",` +
		`source_principal="spiffe://cluster.local/ns/foo/sa/sleep",source_version="v1",source_workload="sleep",source_workload_namespace="foo"`
	deniedLabels := strings.Replace(strings.Replace(labels, `response_flags="-"`, `response_flags="DENY"`, 1),
		`source_principal="spiffe://cluster.local/ns/foo/sa/sleep"`, `source_principal="spiffe://cluster.local/ns/bar/sa/curl"`, 1)
	for _, want := range []string{
		"istio_tcp_connections_opened_total{" + labels + "} 1",
		"istio_tcp_connections_closed_total{" + labels + "} 1",
		"istio_tcp_sent_bytes_total{" + labels + "} 1200",
		"istio_tcp_received_bytes_total{" + labels + "} 3400",
		"istio_tcp_connections_opened_total{" + deniedLabels + "} 1",
		`istio_build{component="ztunnel",tag="1.0.0-dev"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(out)
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

// The exposition is what Prometheus parses: the reference parser reads it
// back with every value, including label values that need escaping.
func TestExpositionParses(t *testing.T) {
	m := New(`v1 "quoted"`)
	odd := Labels{Reporter: "source", Source: Peer{Workload: "a\\b"}, DestinationService: `say "hi"`, Destination: Peer{Workload: "two\nlines"}}
	m.Opened(odd)
	m.Opened(odd)
	m.Closed(odd, 7, 9)
	m.Opened(Labels{Reporter: "destination"})
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(scrape(t, m)))
	if err != nil {
		t.Fatalf("Prometheus cannot parse the exposition: %v", err)
	}
	find := func(name, reporter string) *dto.Metric {
		f := fams[name]
		if f == nil || f.GetType() != dto.MetricType_COUNTER && name != "istio_build" {
			t.Fatalf("%s missing or not a counter: %v", name, f)
		}
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "reporter" && lp.GetValue() == reporter {
					return mt
				}
			}
		}
		t.Fatalf("%s has no series for reporter %s", name, reporter)
		return nil
	}
	for name, want := range map[string]float64{
		"istio_tcp_connections_opened_total": 2, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total": 7, "istio_tcp_received_bytes_total": 9,
	} {
		mt := find(name, "source")
		if got := mt.GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
		labels := map[string]string{}
		for _, lp := range mt.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if labels["source_workload"] != "a\\b" || labels["destination_service"] != `say "hi"` || labels["destination_workload"] != "two\nlines" {
			t.Errorf("%s labels came back as %q", name, labels)
		}
		if len(labels) != len(labelNames) {
			t.Errorf("%s has %d labels, want %d", name, len(labels), len(labelNames))
		}
	}
	if got := find("istio_tcp_connections_opened_total", "destination").GetCounter().GetValue(); got != 1 {
		t.Errorf("destination series opened = %v, want 1", got)
	}
	b := fams["istio_build"]
	if b.GetType() != dto.MetricType_GAUGE || len(b.GetMetric()) != 1 || b.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("istio_build: %v", b)
	}
}
