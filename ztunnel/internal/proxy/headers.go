package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// connectHeader is what an outbound CONNECT carries beside its authority,
// as Istio's ztunnel sends it (../shared/PROTOCOLS.md): where the
// connection came from (forwarded, with the service's hostname when it was
// addressed by service), the source workload's metadata (baggage), and a
// new trace context. A receiver may use them for telemetry; none of them
// is ever evidence of identity, which comes from the peer certificate.
func connectHeader(src netip.AddrPort, srcW *workloadapi.Workload, svc *workloadapi.Service) map[string][]string {
	fwd := `for="` + src.String() + `"`
	if h := svc.GetHostname(); h != "" {
		fwd += ";host=" + h
	}
	h := map[string][]string{
		"forwarded":   {fwd},
		"traceparent": {traceparent()},
	}
	if b := baggage(srcW); b != "" {
		h["baggage"] = []string{b}
	}
	return h
}

// baggage is the W3C baggage of a source workload: cluster, namespace,
// workload by its kind (k8s.deployment.name, ...), and canonical service
// name and revision. Empty values are left out.
func baggage(w *workloadapi.Workload) string {
	if w == nil {
		return ""
	}
	var b strings.Builder
	add := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		baggageValue(&b, v)
	}
	add("k8s.cluster.name", w.GetClusterId())
	add("k8s.namespace.name", w.GetNamespace())
	add("k8s."+strings.ToLower(w.GetWorkloadType().String())+".name", w.GetWorkloadName())
	add("service.name", w.GetCanonicalName())
	add("service.version", w.GetCanonicalRevision())
	return b.String()
}

// baggageValue writes v percent-encoded where W3C baggage requires it:
// outside printable ASCII, and the space, '"', ',', ';', '\\' and '%'.
func baggageValue(b *strings.Builder, v string) {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\",;\\%", c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
}

// traceparent is a new W3C trace context, not sampled: version 00, a
// random trace id and parent id (never all zeros, which W3C reserves),
// flags 00.
func traceparent() string {
	var id [24]byte
	binary.LittleEndian.PutUint64(id[0:], rand.Uint64()|1)
	binary.LittleEndian.PutUint64(id[8:], rand.Uint64())
	binary.LittleEndian.PutUint64(id[16:], rand.Uint64()|1)
	var out [55]byte
	copy(out[:], "00-")
	hex.Encode(out[3:35], id[:16])
	out[35] = '-'
	hex.Encode(out[36:52], id[16:])
	copy(out[52:], "-00")
	return string(out[:])
}
