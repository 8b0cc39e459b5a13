package proxy

import (
	"net/netip"
	"time"

	"github.com/ambient-mesh/mesh/ztunnel/internal/authz"
	"github.com/ambient-mesh/mesh/ztunnel/internal/metrics"
)

// accessRecord is one line of the access log: every connection ztunnel
// carries or refuses gets one when it ends.
type accessRecord struct {
	dir       string
	pod       *pod
	src, dst  netip.AddrPort
	authority string
	target    netip.AddrPort
	via       string
	peer      string
	policy    string
	dryRun    *authz.Decision
	reason    string
	start     time.Time
	err       error
}

func (r *accessRecord) attrs(l metrics.Labels) []any {
	a := []any{
		"direction", r.dir,
		"pod", r.pod.name(),
		"src", r.src.String(),
		"src_workload", l.Source.Workload,
		"src_identity", l.Source.Principal,
		"dst_workload", l.Destination.Workload,
		"dst_identity", l.Destination.Principal,
		"duration_ms", time.Since(r.start).Milliseconds(),
	}
	if r.dst.IsValid() {
		a = append(a, "dst", r.dst.String())
	}
	if r.authority != "" {
		a = append(a, "authority", r.authority)
	}
	if r.target.IsValid() {
		a = append(a, "upstream", r.target.String())
	}
	if r.via != "" {
		a = append(a, "via", r.via)
	}
	if r.policy != "" {
		a = append(a, "policy", r.policy)
	}
	if d := r.dryRun; d != nil {
		// What enforcing the dry-run policies would have done.
		result := "allow"
		if !d.Allow {
			result = "deny"
		}
		a = append(a, "dry_run_result", result, "dry_run_reason", d.Reason)
		if d.Policy != "" {
			a = append(a, "dry_run_policy", d.Policy)
		}
	}
	return a
}

// fail logs and counts a connection that was refused or could not be
// carried; flag is its response flag.
func (r *accessRecord) fail(l metrics.Labels, flag string, err error) {
	a := append(r.attrs(l), "response_flags", flag)
	if r.reason != "" {
		a = append(a, "reason", r.reason)
	}
	if err != nil {
		a = append(a, "error", err.Error())
	}
	r.pod.p.cfg.Log.Warn("connection refused", a...)
	r.pod.p.refused(l)
}

// done logs a connection that was carried and has ended.
func (r *accessRecord) done(l metrics.Labels, sent, received int64) {
	a := append(r.attrs(l), "bytes_sent", sent, "bytes_received", received)
	r.pod.p.cfg.Log.Info("connection complete", a...)
}

func (p *Proxy) opened(l metrics.Labels) {
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.Opened(l)
	}
}

func (p *Proxy) closed(l metrics.Labels, sent, received int64) {
	if p.cfg.Metrics != nil {
		p.cfg.Metrics.Closed(l, sent, received)
	}
}

// refused counts a connection that opened and closed at once.
func (p *Proxy) refused(l metrics.Labels) {
	p.opened(l)
	p.closed(l, 0, 0)
}
