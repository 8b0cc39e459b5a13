package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Labels describe one connection, as Istio labels TCP metrics.
type Labels struct {
	Reporter             string // "source" or "destination"
	SourceWorkload       string
	SourceNamespace      string
	SourcePrincipal      string
	DestinationWorkload  string
	DestinationNamespace string
	DestinationService   string
	DestinationPrincipal string
	// SecurityPolicy is "mutual_tls" or "unknown" (plaintext).
	SecurityPolicy string
	// ResponseFlags is "-" for a clean connection, otherwise Envoy-style
	// flags such as "DENY" (refused by policy) or "CONNECT" (upstream
	// unreachable).
	ResponseFlags string
}

var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_service", "destination_principal",
	"request_protocol", "connection_security_policy", "response_flags",
}

func (l Labels) values() []string {
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	return []string{
		l.Reporter,
		or(l.SourceWorkload, "unknown"), or(l.SourceNamespace, "unknown"), or(l.SourcePrincipal, "unknown"),
		or(l.DestinationWorkload, "unknown"), or(l.DestinationNamespace, "unknown"), or(l.DestinationService, "unknown"), or(l.DestinationPrincipal, "unknown"),
		"tcp", or(l.SecurityPolicy, "unknown"), or(l.ResponseFlags, "-"),
	}
}

// Metrics is ztunnel's registry.
type Metrics struct {
	reg                            *prometheus.Registry
	opened, closed, sent, received *prometheus.CounterVec
}

// New registers the metrics; version is reported in istio_build.
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened.",
		}, labelNames),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed.",
		}, labelNames),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent during response (destination to source) in TCP connections.",
		}, labelNames),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total", Help: "Bytes received during request (source to destination) in TCP connections.",
		}, labelNames),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "istio_build", Help: "Build information."}, []string{"component", "tag"})
	build.WithLabelValues("ztunnel", version).Set(1)
	m.reg.MustRegister(m.opened, m.closed, m.sent, m.received, build)
	return m
}

// Opened counts a connection as it starts.
func (m *Metrics) Opened(l Labels) { m.opened.WithLabelValues(l.values()...).Inc() }

// Closed counts a connection as it ends, with the bytes it carried each way
// as Istio counts them whichever the reporter: sent is what the destination
// sent back (the response), received what the source sent (the request).
func (m *Metrics) Closed(l Labels, sent, received int64) {
	v := l.values()
	m.closed.WithLabelValues(v...).Inc()
	m.sent.WithLabelValues(v...).Add(float64(sent))
	m.received.WithLabelValues(v...).Add(float64(received))
}

// Handler serves the metrics in the Prometheus text format, for /metrics
// and /stats/prometheus on 15020.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
