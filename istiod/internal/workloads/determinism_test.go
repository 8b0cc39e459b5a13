package workloads

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestDeterministic checks that equal inputs give byte-identical resources,
// including when the candidate services arrive in a different order, so a
// push layer can skip unchanged resources by comparing bytes.
func TestDeterministic(t *testing.T) {
	var services []*corev1.Service
	for i := range 50 {
		var ports []corev1.ServicePort
		for j := range 10 {
			target := intstr.FromInt32(int32(8000 + j))
			if j%2 == 0 {
				target = intstr.FromString("http")
			}
			ports = append(ports, svcPort(int32(1000+j), target))
		}
		s := service(fmt.Sprintf("svc-%02d", i), map[string]string{"app": "web"}, ports...)
		s.Spec.ClusterIPs = []string{fmt.Sprintf("10.96.1.%d", i), fmt.Sprintf("fd00::%x", i)}
		services = append(services, s)
	}
	ns := namespace("app", map[string]string{LabelDataplaneMode: DataplaneModeAmbient, LabelUseWaypoint: "wp"})
	opts := proto.MarshalOptions{Deterministic: true}

	marshal := func(svcs []*corev1.Service) [][]byte {
		t.Helper()
		w := Workload(readyPod(), Inputs{Namespace: ns, Services: svcs, Mesh: mesh})
		if w == nil {
			t.Fatal("Workload() returned nil")
		}
		if len(w.GetServices()) != len(svcs) {
			t.Fatalf("got %d services, want %d", len(w.GetServices()), len(svcs))
		}
		out := [][]byte{mustMarshal(t, opts, &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}})}
		for _, s := range services { // fixed order: Service output must not depend on svcs order
			ws, _ := Service(s, Inputs{Namespace: ns, Mesh: mesh})
			if ws == nil {
				t.Fatal("Service() returned nil")
			}
			out = append(out, mustMarshal(t, opts, &workloadapi.Address{Type: &workloadapi.Address_Service{Service: ws}}))
		}
		return out
	}

	first := marshal(services)
	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 20 {
		shuffled := append([]*corev1.Service(nil), services...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		again := marshal(shuffled)
		for i := range first {
			if !bytes.Equal(first[i], again[i]) {
				t.Fatalf("run %d: resource %d marshalled differently", run, i)
			}
		}
	}
}

func mustMarshal(t *testing.T, opts proto.MarshalOptions, m proto.Message) []byte {
	t.Helper()
	b, err := opts.Marshal(m)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}
