// Package metrics exposes ztunnel's Prometheus metrics under the names and
// labels Istio's dashboards expect: istio_tcp_connections_opened_total,
// istio_tcp_connections_closed_total, istio_tcp_sent_bytes_total,
// istio_tcp_received_bytes_total and istio_build.
package metrics
