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
	Reporter            string // "source" or "destination"
	Source, Destination Peer

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

// Peer is one end of a connection.
type Peer struct {
	Workload          string
	Namespace         string
	Principal         string
	CanonicalService  string // also reported as the app, as Istio's ztunnel does
	CanonicalRevision string // also reported as the version
	Cluster           string
}

// peerLabels are a Peer's label names after "source_" or "destination_".
var peerLabels = []string{"workload", "workload_namespace", "principal", "canonical_service", "canonical_revision", "app", "version", "cluster"}

var labelNames = func() []string {
	names := []string{"reporter"}
	for _, end := range []string{"source_", "destination_"} {
		for _, l := range peerLabels {
			names = append(names, end+l)
		}
	}
	return append(names,
		"destination_service", "destination_service_name", "destination_service_namespace",
		"request_protocol", "connection_security_policy", "response_flags")
}()

func unknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (p Peer) values() []string {
	return []string{
		unknown(p.Workload), unknown(p.Namespace), unknown(p.Principal),
		unknown(p.CanonicalService), unknown(p.CanonicalRevision), unknown(p.CanonicalService), unknown(p.CanonicalRevision),
		unknown(p.Cluster),
	}
}

func (l Labels) values() []string {
	flags := l.ResponseFlags
	if flags == "" {
		flags = "-"
	}
	v := append([]string{l.Reporter}, l.Source.values()...)
	v = append(v, l.Destination.values()...)
	return append(v,
		unknown(l.DestinationService), unknown(l.DestinationServiceName), unknown(l.DestinationServiceNamespace),
		"tcp", unknown(l.SecurityPolicy), flags)
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
