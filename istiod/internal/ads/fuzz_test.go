package ads

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

// FuzzRequest feeds client-controlled requests to a connection: whatever
// a proxy sends, handling it and building the answers must not panic, and
// an answer only carries resources that exist.
func FuzzRequest(f *testing.F) {
	for _, req := range []*xdsapi.DeltaDiscoveryRequest{
		{TypeUrl: typeAddr},
		{TypeUrl: typeAddr, ResourceNamesSubscribe: []string{"a", "*"}, ResourceNamesUnsubscribe: []string{"b"}},
		{TypeUrl: typeAddr, InitialResourceVersions: map[string]string{"a": "x", "gone": "y"}},
		{TypeUrl: typeAuth, ResponseNonce: "1", ErrorDetail: &xdsapi.Status{Code: 3, Message: "no"}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, b)
	}
	cache := NewCache()
	for _, n := range []string{"a", "b"} {
		a, err := MarshalAny(wrapperspb.String(n))
		if err != nil {
			f.Fatal(err)
		}
		cache.Set(typeAddr, n, a)
	}
	s := NewServer(cache, nil)
	f.Fuzz(func(t *testing.T, first, second []byte) {
		c := &conn{s: s, connectedAt: time.Now(), types: map[string]*typeState{}, wake: make(chan struct{}, 1)}
		for _, b := range [][]byte{first, second} {
			req := &xdsapi.DeltaDiscoveryRequest{}
			if proto.Unmarshal(b, req) != nil {
				return
			}
			if c.handle(req) != nil {
				return
			}
			for {
				resp, _ := c.next()
				if resp == nil {
					break
				}
				for _, r := range resp.GetResources() {
					if _, _, ok := cache.Get(resp.GetTypeUrl(), r.GetName()); !ok {
						t.Fatalf("sent %q, not in the cache", r.GetName())
					}
				}
			}
			_ = c.info()
		}
	})
}
