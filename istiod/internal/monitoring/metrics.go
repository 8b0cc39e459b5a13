package monitoring

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/ca"
)

// Type URLs of the resources istiod serves to ztunnel.
const (
	addressType       = "type.googleapis.com/istio.workload.Address"
	workloadType      = "type.googleapis.com/istio.workload.Workload"
	authorizationType = "type.googleapis.com/istio.security.Authorization"
)

// metricType is the value of the "type" label for a type URL: the short
// names Istio uses, so that dashboards filtering on type="wds" work; other
// types keep their URL.
func metricType(typeURL string) string {
	switch typeURL {
	case addressType, workloadType:
		return "wds"
	case authorizationType:
		return "wads"
	default:
		return typeURL
	}
}

// Buckets as Istio's, so that dashboards and alerts built on its
// histograms read ours the same way.
var (
	pushBuckets        = []float64{.01, .1, 1, 3, 5, 10, 20, 30}
	convergenceBuckets = []float64{.1, .5, 1, 3, 5, 10, 20, 30}
	sizeBuckets        = []float64{1, 10000, 1000000, 4000000, 10000000, 40000000}
)

// xdsMetrics are the ADS event metrics; it implements ads.Observer. Names,
// types and labels are Istio's (counters carry no _total suffix there).
type xdsMetrics struct {
	pushes      *prometheus.CounterVec   // per response sent, by type
	pushTime    *prometheus.HistogramVec // building and sending one response
	sendTime    prometheus.Histogram     // sending one response
	convergence prometheus.Histogram     // change to response sent
	configSize  *prometheus.HistogramVec // encoded response size
	rejects     *prometheus.CounterVec   // NACKs, by type
}

func newXDSMetrics() *xdsMetrics {
	return &xdsMetrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes",
			Help: "Responses sent to xDS clients, by type.",
		}, []string{"type"}),
		pushTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pilot_xds_push_time",
			Help:    "Seconds taken to build one response from the cache and send it, by type.",
			Buckets: pushBuckets,
		}, []string{"type"}),
		sendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_xds_send_time",
			Help:    "Seconds taken to hand one built response to the transport.",
			Buckets: pushBuckets,
		}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_proxy_convergence_time",
			Help:    "Seconds from a change (cache write or subscription) to the response carrying it being sent, including any wait for the client to acknowledge the previous response.",
			Buckets: convergenceBuckets,
		}),
		configSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pilot_xds_config_size_bytes",
			Help:    "Encoded size of the responses sent to xDS clients, by type.",
			Buckets: sizeBuckets,
		}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects",
			Help: "Responses rejected (NACKed) by xDS clients, by type.",
		}, []string{"type"}),
	}
}

func (m *xdsMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pushes, m.pushTime, m.sendTime, m.convergence, m.configSize, m.rejects}
}

// Pushed implements ads.Observer.
func (m *xdsMetrics) Pushed(p ads.Push) {
	t := metricType(p.TypeURL)
	m.pushes.WithLabelValues(t).Inc()
	m.pushTime.WithLabelValues(t).Observe((p.Build + p.Send).Seconds())
	m.sendTime.Observe(p.Send.Seconds())
	m.convergence.Observe(p.Waited.Seconds())
	m.configSize.WithLabelValues(t).Observe(float64(p.Bytes))
}

// Rejected implements ads.Observer.
func (m *xdsMetrics) Rejected(typeURL string) {
	m.rejects.WithLabelValues(metricType(typeURL)).Inc()
}

var xdsClientsDesc = prometheus.NewDesc("pilot_xds",
	"xDS clients connected to this istiod, by the version they report.", []string{"version"}, nil)

// xdsClients reads the connected clients from the ADS server at scrape
// time.
type xdsClients struct{ s *ads.Server }

func (c xdsClients) Describe(ch chan<- *prometheus.Desc) { ch <- xdsClientsDesc }

func (c xdsClients) Collect(ch chan<- prometheus.Metric) {
	byVersion := map[string]int{}
	for _, ci := range c.s.Connections() {
		byVersion[ci.ProxyVersion]++
	}
	for v, n := range byVersion {
		ch <- prometheus.MustNewConstMetric(xdsClientsDesc, prometheus.GaugeValue, float64(n), v)
	}
}

// Istio's CA metrics. The sign error label values are Istio's error types.
var (
	csrCountDesc = prometheus.NewDesc("citadel_server_csr_count",
		"Certificate signing requests received.", nil, nil)
	issuedDesc = prometheus.NewDesc("citadel_server_success_cert_issuance_count",
		"Certificates issued.", nil, nil)
	authnFailureDesc = prometheus.NewDesc("citadel_server_authentication_failure_count",
		"Certificate requests whose caller could not be authenticated.", nil, nil)
	signErrorDesc = prometheus.NewDesc("citadel_server_csr_sign_err_count",
		"Certificate requests that failed at signing: CSR_ERROR for a bad CSR, CERT_GEN_ERROR for a failure of ours.", []string{"error"}, nil)
	rootExpiryTimestampDesc = prometheus.NewDesc("citadel_server_root_cert_expiry_timestamp",
		"Unix time, in seconds, at which the root certificate expires.", nil, nil)
	rootExpirySecondsDesc = prometheus.NewDesc("citadel_server_root_cert_expiry_seconds",
		"Seconds until the root certificate expires; negative once expired.", nil, nil)
	chainExpiryTimestampDesc = prometheus.NewDesc("citadel_server_cert_chain_expiry_timestamp",
		"Unix time, in seconds, at which the signing chain expires (its earliest expiry).", nil, nil)
	chainExpirySecondsDesc = prometheus.NewDesc("citadel_server_cert_chain_expiry_seconds",
		"Seconds until the signing chain expires; negative once expired.", nil, nil)
	// Ours: Istio has no metric for refusals by reason, which is what an
	// operator needs to tell a forged token from a missing pod.
	refusalsDesc = prometheus.NewDesc("istiod_ca_refusals_total",
		"Certificate requests refused, by reason.", []string{"reason"}, nil)
)

// signErrorTypes maps the refusals that happen at signing to Istio's
// error types.
var signErrorTypes = map[string]string{
	ca.ReasonBadCSR:     "CSR_ERROR",
	ca.ReasonSignFailed: "CERT_GEN_ERROR",
}

// caMetrics reads the CA server's counters and its authority's expiry at
// scrape time.
type caMetrics struct {
	s   *ca.Server
	now func() time.Time
}

func (c caMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{csrCountDesc, issuedDesc, authnFailureDesc, signErrorDesc, refusalsDesc,
		rootExpiryTimestampDesc, rootExpirySecondsDesc, chainExpiryTimestampDesc, chainExpirySecondsDesc} {
		ch <- d
	}
}

func (c caMetrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st := c.s.Stats()
	// Every request ends issued or refused, exactly once.
	total := st.Issued
	for _, n := range st.Refused {
		total += n
	}
	counter(csrCountDesc, total)
	counter(issuedDesc, st.Issued)
	counter(authnFailureDesc, st.Refused[ca.ReasonUnauthenticated]+st.Refused[ca.ReasonAuthUnavailable])
	signErrors := map[string]uint64{}
	for reason, errType := range signErrorTypes {
		signErrors[errType] += st.Refused[reason]
	}
	for errType, n := range signErrors {
		counter(signErrorDesc, n, errType)
	}
	for reason, n := range st.Refused {
		counter(refusalsDesc, n, reason)
	}

	if a := c.s.Authority; a != nil {
		now := c.now()
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
		}
		gauge(rootExpiryTimestampDesc, float64(a.RootExpiry().Unix()))
		gauge(rootExpirySecondsDesc, a.RootExpiry().Sub(now).Seconds())
		gauge(chainExpiryTimestampDesc, float64(a.ChainExpiry().Unix()))
		gauge(chainExpirySecondsDesc, a.ChainExpiry().Sub(now).Seconds())
	}
}
