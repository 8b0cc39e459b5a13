package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/ambient-mesh/mesh/tests/procstat"
)

// summary is the distribution of a set of durations.
type summary struct {
	n                       int
	p50, p90, p99, max, sum time.Duration
}

func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return summary{
		n: len(s), sum: sum, max: s[len(s)-1],
		p50: percentile(s, 0.50), p90: percentile(s, 0.90), p99: percentile(s, 0.99),
	}
}

// percentile is the nearest-rank percentile of sorted.
func percentile[T any](sorted []T, p float64) T {
	i := max(int(math.Ceil(p*float64(len(sorted))))-1, 0)
	return sorted[min(i, len(sorted)-1)]
}

func (s summary) String() string {
	if s.n == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max), s.n)
}

// ms formats a duration for people: milliseconds with a sensible number
// of digits, or seconds above 10 s.
func ms(d time.Duration) string {
	switch a := d.Abs(); {
	case a >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case a >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b int) string {
	if b < 10<<10 {
		return fmt.Sprintf("%d B", b)
	}
	return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
}

// changeStats are the figures of a series of single changes.
type changeStats struct {
	what      string
	latency   summary
	bytes     []int // per change
	resources []int
	foreign   int
}

func newChangeStats(what string, cs []change) changeStats {
	st := changeStats{what: what}
	ls := make([]time.Duration, 0, len(cs))
	for _, c := range cs {
		ls = append(ls, c.latency)
		st.bytes = append(st.bytes, c.bytes)
		st.resources = append(st.resources, c.resources)
		st.foreign += c.foreign
	}
	st.latency = summarize(ls)
	return st
}

func intRange(xs []int) (lo, p50, hi int) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[0], percentile(s, 0.5), s[len(s)-1]
}

// report is everything one run measured.
type report struct {
	commit             string
	cpus               int
	pods, services     int
	nodes              int
	namespace          string
	initialAddresses   int // held by the client before the run created anything
	initialBytes       int
	servicesCreate     time.Duration
	podsCreate         time.Duration
	statusWrite        summary // API server time of the status writes
	serviceWrite       summary // API server time of the Service creates
	loadBefore         string  // /proc/loadavg
	loadAfter          string
	podArrival         summary // status write sent -> workload at the client
	podAfterWrite      summary // status write answered -> workload at the client
	serviceArrival     summary // create sent -> service at the client
	batch              time.Duration
	drain              time.Duration // last status write answered -> last pod arrived
	bulkResponses      int
	bulkBytes          int
	bulkLargest        int
	podChanges         changeStats
	serviceChanges     changeStats
	memIdle, memLoaded procstat.Memory
	memFinal           procstat.Memory
	cpuBulk            time.Duration
	cpuBulkWall        time.Duration
}

// Targets from the issue; printed next to the figures, never asserted.
const (
	targetP99      = time.Second
	targetMemory   = 1 << 30
	extrapolateFor = 10000 // pods, at which targetMemory applies
)

func (r *report) print(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("istiod scale benchmark: %d pods, %d Services in one namespace (%s), %d fake nodes; commit %s; %d CPUs",
		r.pods, r.services, r.namespace, r.nodes, r.commit, r.cpus)
	p("")
	p("load against the API server")
	p("  Services created       %d in %s (%.0f/s); create answered in %s", r.services, ms(r.servicesCreate), rate(r.services, r.servicesCreate), r.serviceWrite)
	p("  pods created + status  %d in %s (%.0f/s); status write answered in %s", r.pods, ms(r.podsCreate), rate(r.pods, r.podsCreate), r.statusWrite)
	p("  machine load average (1, 5, 15 min) at the start %s, at the end %s", r.loadBefore, r.loadAfter)
	p("  client before the run: %d addresses of other namespaces, first responses %s", r.initialAddresses, kib(r.initialBytes))
	p("")
	p("bulk: arrival at the client, while the load runs")
	p("  pod status write sent -> workload      %s", r.podArrival)
	p("  pod status write answered -> workload  %s", r.podAfterWrite)
	p("    (the API server answers a write after its watchers may already have it, so this can be negative)")
	p("  Service create sent -> service         %s", r.serviceArrival)
	p("  whole batch: first status write sent -> last workload arrived: %s; after the last status write was answered: %s", ms(r.batch), ms(r.drain))
	p("  pushed: %d responses, %s in all, largest %s", r.bulkResponses, kib(r.bulkBytes), kib(r.bulkLargest))
	p("  istiod CPU: %s over %s of load (%.2f cores)", ms(r.cpuBulk), ms(r.cpuBulkWall), r.cpuBulk.Seconds()/max(r.cpuBulkWall.Seconds(), 1e-9))
	p("")
	p("single changes, one at a time, after the load settled (change sent -> last expected resource at the client)")
	for _, c := range []changeStats{r.podChanges, r.serviceChanges} {
		if c.latency.n == 0 {
			continue
		}
		blo, b50, bhi := intRange(c.bytes)
		rlo, _, rhi := intRange(c.resources)
		p("  %s", c.what)
		p("    latency              %s", c.latency)
		p("    bytes per change     p50 %s  min %s  max %s", kib(b50), kib(blo), kib(bhi))
		p("    resources per change min %d  max %d", rlo, rhi)
		if c.foreign > 0 {
			p("    (%d responses about other users' objects arrived meanwhile; not counted)", c.foreign)
		}
	}
	p("")
	perK := r.memPer1000()
	p("istiod memory (/proc/<pid>/status)")
	p("  synced, before the run       VmRSS %s", mib(r.memIdle.RSS))
	p("  after the load settled       VmRSS %s  VmHWM %s", mib(r.memLoaded.RSS), mib(r.memLoaded.HWM))
	p("  at the end                   VmRSS %s  VmHWM %s", mib(r.memFinal.RSS), mib(r.memFinal.HWM))
	p("  growth per 1,000 pods (with their Services), peak: %s", mib(int64(perK)))
	p("")
	p("targets (printed, not asserted)")
	p("  %-44s %-28s %s", "target", "measured", "met")
	p("  %-44s %-28s %s", "pod change -> client p99 <= 1 s (single)", ms(r.podChanges.latency.p99), met(r.podChanges.latency.n > 0 && r.podChanges.latency.p99 <= targetP99))
	p("  %-44s %-28s %s", fmt.Sprintf("pod -> client p99 <= 1 s (bulk of %d)", r.pods), ms(r.podArrival.p99), met(r.podArrival.p99 <= targetP99))
	if r.serviceChanges.latency.n > 0 {
		p("  %-44s %-28s %s", "Service change -> client p99 <= 1 s", ms(r.serviceChanges.latency.p99), met(r.serviceChanges.latency.p99 <= targetP99))
	}
	est := r.memExtrapolated()
	if r.pods == extrapolateFor {
		p("  %-44s %-28s %s", "memory <= 1 GB at 10k pods", mib(int64(est))+" (peak, measured)", met(est <= targetMemory))
		return
	}
	p("  %-44s %-28s %s", "memory <= 1 GB at 10k pods", mib(int64(est))+" (extrapolated)", met(est <= targetMemory))
	p("  memory at 10k pods is extrapolated linearly: RSS before the run + %d x the peak growth per pod measured here", extrapolateFor)
}

func (r *report) memPer1000() float64 {
	if r.pods == 0 {
		return 0
	}
	peak := max(r.memLoaded.HWM, r.memFinal.HWM)
	return float64(peak-r.memIdle.RSS) / float64(r.pods) * 1000
}

func (r *report) memExtrapolated() float64 {
	return float64(r.memIdle.RSS) + r.memPer1000()*extrapolateFor/1000
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
