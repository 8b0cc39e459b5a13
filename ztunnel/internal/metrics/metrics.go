package metrics

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
)

// Labels describe one connection, as Istio labels TCP metrics. Empty
// values are reported as "unknown".
type Labels struct {
	Reporter string // "source" or "destination"

	SourceWorkload          string
	SourceNamespace         string
	SourcePrincipal         string
	SourceCanonicalService  string // also source_app, as Istio's ztunnel reports it
	SourceCanonicalRevision string // also source_version
	SourceCluster           string

	DestinationWorkload          string
	DestinationNamespace         string
	DestinationPrincipal         string
	DestinationCanonicalService  string // also destination_app
	DestinationCanonicalRevision string // also destination_version
	DestinationCluster           string

	// DestinationService is the service's hostname; the name and
	// namespace are the Kubernetes Service's.
	DestinationService          string
	DestinationServiceName      string
	DestinationServiceNamespace string

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
	"source_canonical_service", "source_canonical_revision", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_canonical_service", "destination_canonical_revision", "destination_app", "destination_version", "destination_cluster",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "connection_security_policy", "response_flags",
}

func (l Labels) values() []string {
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	u := func(s string) string { return or(s, "unknown") }
	return []string{
		l.Reporter,
		u(l.SourceWorkload), u(l.SourceNamespace), u(l.SourcePrincipal),
		u(l.SourceCanonicalService), u(l.SourceCanonicalRevision), u(l.SourceCanonicalService), u(l.SourceCanonicalRevision), u(l.SourceCluster),
		u(l.DestinationWorkload), u(l.DestinationNamespace), u(l.DestinationPrincipal),
		u(l.DestinationCanonicalService), u(l.DestinationCanonicalRevision), u(l.DestinationCanonicalService), u(l.DestinationCanonicalRevision), u(l.DestinationCluster),
		u(l.DestinationService), u(l.DestinationServiceName), u(l.DestinationServiceNamespace),
		"tcp", u(l.SecurityPolicy), or(l.ResponseFlags, "-"),
	}
}

// Metrics is ztunnel's registry: four counters per label set, and the
// build gauge. It writes the Prometheus text format itself; a client library
// would cost every node proxy a megabyte of memory for these few series.
type Metrics struct {
	version string

	mu     sync.Mutex
	series map[Labels]*counts
}

type counts struct {
	opened, closed, sent, received uint64
}

// New starts a registry; version is reported in istio_build.
func New(version string) *Metrics {
	return &Metrics{version: version, series: map[Labels]*counts{}}
}

func (m *Metrics) get(l Labels) *counts {
	c := m.series[l]
	if c == nil {
		c = &counts{}
		m.series[l] = c
	}
	return c
}

// Opened counts a connection as it starts.
func (m *Metrics) Opened(l Labels) {
	m.mu.Lock()
	m.get(l).opened++
	m.mu.Unlock()
}

// Closed counts a connection as it ends, with the bytes it carried each way
// as Istio counts them whichever the reporter: sent is what the destination
// sent back (the response), received what the source sent (the request).
func (m *Metrics) Closed(l Labels, sent, received int64) {
	m.mu.Lock()
	c := m.get(l)
	c.closed++
	c.sent += uint64(max(sent, 0))
	c.received += uint64(max(received, 0))
	m.mu.Unlock()
}

// families are the counters in exposition order.
var families = []struct {
	name, help string
	value      func(*counts) uint64
}{
	{"istio_tcp_connections_opened_total", "TCP connections opened.", func(c *counts) uint64 { return c.opened }},
	{"istio_tcp_connections_closed_total", "TCP connections closed.", func(c *counts) uint64 { return c.closed }},
	{"istio_tcp_sent_bytes_total", "Bytes sent during response (destination to source) in TCP connections.", func(c *counts) uint64 { return c.sent }},
	{"istio_tcp_received_bytes_total", "Bytes received during request (source to destination) in TCP connections.", func(c *counts) uint64 { return c.received }},
}

// sortedLabelNames are labelNames in the order the exposition lists them.
var sortedLabelNames = func() []int {
	idx := make([]int, len(labelNames))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return labelNames[idx[a]] < labelNames[idx[b]] })
	return idx
}()

// WriteTo writes every series in the Prometheus text exposition format
// (version 0.0.4), series in a stable order.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	m.mu.Lock()
	type row struct {
		labels string
		c      counts
	}
	rows := make([]row, 0, len(m.series))
	for l, c := range m.series {
		rows = append(rows, row{formatLabels(l.values()), *c})
	}
	m.mu.Unlock()
	sort.Slice(rows, func(i, j int) bool { return rows[i].labels < rows[j].labels })

	var b strings.Builder
	for _, f := range families {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", f.name, f.help, f.name)
		for _, r := range rows {
			fmt.Fprintf(&b, "%s{%s} %d\n", f.name, r.labels, f.value(&r.c))
		}
	}
	fmt.Fprintf(&b, "# HELP istio_build Build information.\n# TYPE istio_build gauge\n")
	fmt.Fprintf(&b, "istio_build{component=\"ztunnel\",tag=%s} 1\n", quote(m.version))
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func formatLabels(values []string) string {
	var b strings.Builder
	for i, idx := range sortedLabelNames {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labelNames[idx])
		b.WriteByte('=')
		b.WriteString(quote(values[idx]))
	}
	return b.String()
}

// quote escapes a label value as the text format requires: backslash,
// double quote and line feed.
func quote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}

// Handler serves the metrics in the Prometheus text format, for /metrics
// and /stats/prometheus on 15020.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = m.WriteTo(w)
	})
}
