// Package monitoring owns istiod's operations surface, served on the
// monitoring port (15014, as Istio's): Prometheus metrics under Istio's
// names at /metrics, and JSON debug endpoints under /debug that show which
// proxies are connected, how far each is in sync, and what each was sent.
//
// It only reads: push and rejection events arrive through ads.Observer,
// everything else (connected proxies, certificate counts, root expiry) is
// read from the ADS and CA servers when scraped, so a metric can never
// drift from what those servers report themselves.
package monitoring
