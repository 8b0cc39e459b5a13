package monitoring

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/ca"
)

// Sources are what the monitoring surface reads. A nil one is left out:
// its metrics are not exported and, for ADS, the debug endpoints answer 404.
type Sources struct {
	ADS *ads.Server
	// Cache gives /debug/config_dump?resources=true the bodies.
	Cache *ads.Cache
	CA    *ca.Server
}

// Monitor serves istiod's metrics and debug endpoints. It is an
// ads.Observer: pass it to the ADS server's SetObserver so that pushes and
// rejections are counted.
type Monitor struct {
	src Sources
	log *slog.Logger
	reg *prometheus.Registry
	xds *xdsMetrics
}

var _ ads.Observer = (*Monitor)(nil)

// New returns a Monitor reading src. A nil log discards.
func New(src Sources, log *slog.Logger) *Monitor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{src: src, log: log, reg: prometheus.NewRegistry(), xds: newXDSMetrics()}
	// Its own registry, not the global one: nothing a library registers
	// behind our back ends up on the page, and tests get a fresh one each.
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.xds.collectors()...)
	if src.ADS != nil {
		m.reg.MustRegister(xdsClients{src.ADS})
	}
	if src.CA != nil {
		m.reg.MustRegister(caMetrics{s: src.CA, now: time.Now})
	}
	return m
}

// Pushed implements ads.Observer.
func (m *Monitor) Pushed(p ads.Push) { m.xds.Pushed(p) }

// Rejected implements ads.Observer.
func (m *Monitor) Rejected(typeURL string) { m.xds.Rejected(typeURL) }

// Handler serves /metrics (Prometheus text format) and the JSON debug
// endpoints:
//
//	/debug/connections   connected proxies and, per type, what they subscribe to and were sent
//	/debug/syncz         per proxy and type: last nonce sent, acknowledged, rejected
//	/debug/config_dump   ?proxyID=<node id or connection id>[&resources=true]: what a proxy holds
func (m *Monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelError),
		// A scrape that fails halfway still shows what it could.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	if m.src.ADS != nil {
		mux.HandleFunc("GET /debug/connections", m.connections)
		mux.HandleFunc("GET /debug/syncz", m.syncz)
		mux.HandleFunc("GET /debug/config_dump", m.configDump)
	}
	mux.HandleFunc("GET /debug", func(w http.ResponseWriter, _ *http.Request) {
		paths := []string{}
		if m.src.ADS != nil {
			paths = append(paths, "/debug/connections", "/debug/syncz", "/debug/config_dump?proxyID=")
		}
		m.writeJSON(w, http.StatusOK, struct {
			Metrics string   `json:"metrics"`
			Debug   []string `json:"debug"`
		}{"/metrics", paths})
	})
	return mux
}
