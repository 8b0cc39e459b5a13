package state

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// FuzzApplyAddress feeds arbitrary Address bodies, as istiod's stream
// could carry them, into the store: no input may panic, and whatever is
// accepted must be consistent with the lookups.
func FuzzApplyAddress(f *testing.F) {
	for _, a := range []*workloadapi.Address{
		workload("c//Pod/default/a", "10.244.0.5", workloadapi.WorkloadStatus_HEALTHY, "default/echo.default.svc.cluster.local"),
		service("echo.default.svc.cluster.local", "10.96.0.20"),
		{},
	} {
		b, err := proto.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := New()
		err := s.Apply(AddressType, []Resource{{Name: "r", Version: "1", Body: &anypb.Any{TypeUrl: AddressType, Value: data}}}, nil)
		if err != nil {
			if len(s.Versions(AddressType)) != 0 {
				t.Fatal("a rejected resource was recorded")
			}
			return
		}
		var a workloadapi.Address
		_ = proto.Unmarshal(data, &a)
		for _, raw := range a.GetWorkload().GetAddresses() {
			ip, _ := netip.AddrFromSlice(raw)
			if s.WorkloadByIP(ip) == nil {
				t.Fatalf("accepted workload not found by %s", ip)
			}
		}
		if err := s.Apply(AddressType, nil, []string{"r"}); err != nil {
			t.Fatal(err)
		}
		for _, raw := range a.GetWorkload().GetAddresses() {
			ip, _ := netip.AddrFromSlice(raw)
			if s.WorkloadByIP(ip) != nil {
				t.Fatalf("removed workload still found by %s", ip)
			}
		}
	})
}
