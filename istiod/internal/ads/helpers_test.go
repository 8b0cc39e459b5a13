package ads

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/pkg/xdsapi/xdsgrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	typeAddr = "type.googleapis.com/istio.workload.Address"
	typeAuth = "type.googleapis.com/istio.security.Authorization"
	// wait bounds every expected event; quiet is how long "nothing more
	// arrives" is watched for.
	wait  = 10 * time.Second
	quiet = 200 * time.Millisecond
)

type testServer struct {
	cache *Cache
	srv   *Server
	gs    *grpc.Server
	addr  string
}

// startServer serves a fresh cache on 127.0.0.1:0 until the test ends.
func startServer(t *testing.T) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{cache: NewCache(), gs: grpc.NewServer(), addr: lis.Addr().String()}
	ts.srv = NewServer(ts.cache, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	ts.srv.Register(ts.gs)
	served := make(chan error, 1)
	go func() { served <- ts.gs.Serve(lis) }()
	t.Cleanup(func() {
		ts.gs.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return ts
}

type testClient struct {
	t      *testing.T
	s      *xdsgrpc.DeltaStream
	resps  chan *xdsapi.DeltaDiscoveryResponse
	cancel context.CancelFunc
}

// dial opens a Delta ADS stream. Unless read is false, a goroutine reads
// responses into a channel; a client that does not read stands for a stuck
// proxy.
func dial(t *testing.T, addr string, read bool, opts ...grpc.DialOption) *testClient {
	t.Helper()
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := xdsgrpc.OpenDelta(ctx, cc)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &testClient{t: t, s: s, resps: make(chan *xdsapi.DeltaDiscoveryResponse, 100), cancel: cancel}
	done := make(chan struct{})
	if read {
		go func() {
			defer close(done)
			for {
				r, err := s.Recv()
				if err != nil {
					return
				}
				select {
				case c.resps <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
	} else {
		close(done)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cc.Close()
	})
	return c
}

func (c *testClient) send(req *xdsapi.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.s.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *testClient) subscribe(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&xdsapi.DeltaDiscoveryRequest{Node: &xdsapi.Node{Id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local"}, TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

func (c *testClient) recv() *xdsapi.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case <-time.After(wait):
		c.t.Fatal("no response")
		return nil
	}
}

func (c *testClient) ack(r *xdsapi.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

// recvAck receives one response and ACKs it.
func (c *testClient) recvAck() *xdsapi.DeltaDiscoveryResponse {
	c.t.Helper()
	r := c.recv()
	c.ack(r)
	return r
}

func (c *testClient) expectNone() {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: %v", r)
	case <-time.After(quiet):
	}
}

func body(t *testing.T, s string) *anypb.Any {
	t.Helper()
	a, err := MarshalAny(wrapperspb.String(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// got maps the names of a response to their versions.
func got(r *xdsapi.DeltaDiscoveryResponse) map[string]string {
	m := map[string]string{}
	for _, res := range r.GetResources() {
		m[res.GetName()] = res.GetVersion()
	}
	return m
}

// eventually polls cond until it holds or the bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
