package proxy

import (
	"net/netip"
	"regexp"
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

func TestConnectHeader(t *testing.T) {
	src := netip.MustParseAddrPort("10.244.1.7:40312")
	w := &workloadapi.Workload{Name: "sleep-5d8f", Namespace: "foo", ClusterId: "Kubernetes", WorkloadType: workloadapi.WorkloadType_DEPLOYMENT,
		WorkloadName: "sleep", CanonicalName: "sleep", CanonicalRevision: "v1"}
	svc := &workloadapi.Service{Hostname: "echo.foo.svc.cluster.local"}

	h := connectHeader(src, w, svc)
	if got, want := h["forwarded"], `for="10.244.1.7:40312";host=echo.foo.svc.cluster.local`; len(got) != 1 || got[0] != want {
		t.Errorf("forwarded = %q, want %q", got, want)
	}
	if got, want := h["baggage"], "k8s.cluster.name=Kubernetes,k8s.namespace.name=foo,k8s.deployment.name=sleep,service.name=sleep,service.version=v1"; len(got) != 1 || got[0] != want {
		t.Errorf("baggage = %q, want %q", got, want)
	}
	traceparent := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-00$`)
	if got := h["traceparent"]; len(got) != 1 || !traceparent.MatchString(got[0]) {
		t.Errorf("traceparent = %q, want a W3C trace context", got)
	}
	if again := connectHeader(src, w, svc)["traceparent"]; again[0] == h["traceparent"][0] {
		t.Errorf("two connections share trace context %s", again[0])
	}

	// Addressed by pod IP, from a source xDS does not know.
	h = connectHeader(src, nil, nil)
	if got, want := h["forwarded"], `for="10.244.1.7:40312"`; len(got) != 1 || got[0] != want {
		t.Errorf("forwarded = %q, want %q", got, want)
	}
	if _, ok := h["baggage"]; ok {
		t.Errorf("baggage %q for an unknown source", h["baggage"])
	}

	// A job with a revision that needs escaping; empty values left out.
	job := &workloadapi.Workload{Namespace: "batch", WorkloadType: workloadapi.WorkloadType_JOB, WorkloadName: "nightly",
		CanonicalRevision: "a,b;c d%"}
	if got, want := baggage(job), "k8s.namespace.name=batch,k8s.job.name=nightly,service.version=a%2Cb%3Bc%20d%25"; got != want {
		t.Errorf("baggage = %q, want %q", got, want)
	}
}
