package xds

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/rpc"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// controlPlane is a real Delta ADS server: each stream gets the responses
// queued for it, and every request it receives is recorded.
type controlPlane struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	mu       sync.Mutex
	requests []*discovery.DeltaDiscoveryRequest
	pushes   chan *discovery.DeltaDiscoveryResponse
	streams  chan string // the authorization header of each stream opened
}

func (cp *controlPlane) DeltaAggregatedResources(s discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	md, _ := metadata.FromIncomingContext(s.Context())
	cp.streams <- strings.Join(md.Get("authorization"), ",")
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := s.Recv()
			if err != nil {
				errc <- err
				return
			}
			cp.mu.Lock()
			cp.requests = append(cp.requests, req)
			cp.mu.Unlock()
		}
	}()
	for {
		select {
		case resp := <-cp.pushes:
			if err := s.Send(resp); err != nil {
				return err
			}
		case err := <-errc:
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (cp *controlPlane) find(pred func(*discovery.DeltaDiscoveryRequest) bool) *discovery.DeltaDiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, r := range cp.requests {
		if pred(r) {
			return r
		}
	}
	return nil
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serve starts a control plane on addr ("127.0.0.1:0" for any port).
func serve(t *testing.T, addr string) (*controlPlane, string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{pushes: make(chan *discovery.DeltaDiscoveryResponse, 16), streams: make(chan string, 16)}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, cp)
	go func() { _ = gs.Serve(ln) }()
	return cp, ln.Addr().String(), gs.Stop
}

func workloadResource(t *testing.T, uid, ip string) *discovery.Resource {
	t.Helper()
	body, err := anypb.New(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: uid, Name: uid, Namespace: "default", Addresses: [][]byte{netip.MustParseAddr(ip).AsSlice()},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return &discovery.Resource{Name: uid, Version: "1", Resource: body}
}

func TestSyncNackAndResume(t *testing.T) {
	cp, addr, stop := serve(t, "127.0.0.1:0")
	cc := rpc.Dial(addr, rpc.Options{})
	defer cc.Close()
	store := state.New()
	var token atomic.Value
	token.Store("token-1")
	c := &Client{Conn: cc, Node: &xdsapi.Node{Id: "ztunnel~10.250.0.11~ztunnel-x.istio-system~istio-system.svc.cluster.local"},
		Store: store, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Token: func() (string, error) { return token.Load().(string), nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	if auth := <-cp.streams; auth != "Bearer token-1" {
		t.Fatalf("stream opened with authorization %q, want the bearer token", auth)
	}
	eventually(t, "both types subscribed", func() bool {
		return cp.find(func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetTypeUrl() == state.AuthorizationType }) != nil
	})
	if first := cp.find(func(*discovery.DeltaDiscoveryRequest) bool { return true }); first.GetNode().GetId() == "" || first.GetTypeUrl() != state.AddressType {
		t.Fatalf("first request %v; want the node and the Address type", first)
	}

	// A delta with one good and one bad resource: the good one is applied,
	// the response NACKed with the bad one named.
	bad := workloadResource(t, "c//Pod/default/bad", "10.244.0.9")
	bad.Resource = &anypb.Any{TypeUrl: state.AddressType, Value: []byte{0xff, 0xff}}
	cp.pushes <- &discovery.DeltaDiscoveryResponse{TypeUrl: state.AddressType, Nonce: "n1",
		Resources: []*discovery.Resource{workloadResource(t, "c//Pod/default/a", "10.244.0.5"), bad}}
	eventually(t, "the response was answered", func() bool {
		return cp.find(func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetResponseNonce() == "n1" }) != nil
	})
	nack := cp.find(func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetResponseNonce() == "n1" })
	if nack.GetErrorDetail() == nil || !strings.Contains(nack.GetErrorDetail().GetMessage(), "c//Pod/default/bad") {
		t.Fatalf("answer to n1: %v; want a NACK naming the bad resource", nack)
	}
	if store.WorkloadByIP(netip.MustParseAddr("10.244.0.5")) == nil {
		t.Fatal("the good resource of a NACKed delta was not applied")
	}

	// A clean delta is ACKed.
	cp.pushes <- &discovery.DeltaDiscoveryResponse{TypeUrl: state.AddressType, Nonce: "n2",
		Resources: []*discovery.Resource{workloadResource(t, "c//Pod/default/b", "10.244.0.6")}}
	eventually(t, "n2 ACKed", func() bool {
		r := cp.find(func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetResponseNonce() == "n2" })
		return r != nil && r.GetErrorDetail() == nil
	})

	// istiod goes away: the state keeps serving.
	token.Store("token-2") // rotated by the kubelet meanwhile
	stop()
	if store.WorkloadByIP(netip.MustParseAddr("10.244.0.6")) == nil {
		t.Fatal("state lost when the control plane went away")
	}
	// It comes back on the same address: the client resumes with the
	// versions it holds.
	cp2, _, stop2 := serve(t, addr)
	defer stop2()
	select {
	case auth := <-cp2.streams:
		if auth != "Bearer token-2" {
			t.Fatalf("reconnected with authorization %q, want the rotated token", auth)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("client did not reconnect")
	}
	eventually(t, "the resumed subscription", func() bool {
		return cp2.find(func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetTypeUrl() == state.AddressType }) != nil
	})
	resume := cp2.find(func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetTypeUrl() == state.AddressType })
	got := resume.GetInitialResourceVersions()
	if len(got) != 2 || got["c//Pod/default/a"] != "1" || got["c//Pod/default/b"] != "1" {
		t.Fatalf("resumed with %v; want the two resources held", got)
	}
	cp2.pushes <- &discovery.DeltaDiscoveryResponse{TypeUrl: state.AddressType, Nonce: "m1", RemovedResources: []string{"c//Pod/default/a"}}
	eventually(t, "a removal after resuming", func() bool { return store.WorkloadByIP(netip.MustParseAddr("10.244.0.5")) == nil })
}
