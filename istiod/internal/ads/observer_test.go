package ads

import (
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

// events is an Observer that keeps what it is told.
type events struct {
	mu       sync.Mutex
	pushes   []Push
	rejected []string
}

func (r *events) Pushed(p Push) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pushes = append(r.pushes, p)
}

func (r *events) Rejected(typeURL string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejected = append(r.rejected, typeURL)
}

func (r *events) snapshot() ([]Push, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Push(nil), r.pushes...), append([]string(nil), r.rejected...)
}

func TestObserverSeesPushesAndRejections(t *testing.T) {
	ts := startServer(t)
	rec := &events{}
	ts.srv.SetObserver(rec)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	ts.cache.Set(typeAddr, "b", body(t, "b"))
	c := dial(t, ts.addr, true)
	c.subscribe(typeAddr)
	c.recvAck()

	// The change is written while the client sits on an unacknowledged
	// response: its wait for the ACK is part of what the client sees.
	// Each wait is bounded below by what the test held back and above by
	// the span from before the write to after the response arrived.
	before1 := time.Now()
	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	r := c.recv()
	span1 := time.Since(before1)
	before2 := time.Now()
	ts.cache.Set(typeAddr, "b", body(t, "b2"))
	hold := 50 * time.Millisecond
	time.Sleep(hold)
	c.ack(r)
	c.recvAck()
	span2 := time.Since(before2)

	ts.cache.Set(typeAddr, "a", body(t, "bad"))
	r = c.recv()
	c.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: typeAddr, ResponseNonce: r.GetNonce(), ErrorDetail: &xdsapi.Status{Code: 3, Message: "bad"}})
	eventually(t, "rejection", func() bool { _, rej := rec.snapshot(); return len(rej) == 1 })

	pushes, rejected := rec.snapshot()
	if len(pushes) != 4 {
		t.Fatalf("observed %d pushes, want 4: %+v", len(pushes), pushes)
	}
	if rejected[0] != typeAddr {
		t.Fatalf("rejected = %v", rejected)
	}
	if p := pushes[0]; p.TypeURL != typeAddr || p.Resources != 2 || p.Removed != 0 || p.Bytes == 0 {
		t.Fatalf("first push = %+v", p)
	}
	if p := pushes[1]; p.Resources != 1 || p.Waited > span1 {
		t.Fatalf("push of a = %+v, want Waited <= %v", p, span1)
	}
	if p := pushes[2]; p.Resources != 1 || p.Waited < hold || p.Waited > span2 {
		t.Fatalf("push held back by the ACK = %+v, want Waited in [%v, %v]", p, hold, span2)
	}
	for _, p := range pushes {
		if p.Build < 0 || p.Send < 0 || p.Waited < p.Send {
			t.Fatalf("push timings = %+v", p)
		}
	}
}

func TestConnectionInfoForDebugging(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	ts.cache.Set(typeAddr, "b", body(t, "b"))
	c := dial(t, ts.addr, true)
	md, err := structpb.NewStruct(map[string]any{"ISTIO_VERSION": "1.28.0"})
	if err != nil {
		t.Fatal(err)
	}
	c.send(&xdsapi.DeltaDiscoveryRequest{Node: &xdsapi.Node{Id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local", Metadata: md, UserAgentVersion: "0.1"}, TypeUrl: typeAddr})
	c.recvAck()
	ts.cache.Apply(typeAddr, map[string]*anypb.Any{"a": body(t, "a2")}, []string{"b"})
	c.recvAck()

	ci := ts.srv.Connections()[0]
	if !strings.HasPrefix(ci.PeerAddr, "127.0.0.1:") || ci.ProxyVersion != "1.28.0" {
		t.Fatalf("connection = %+v", ci)
	}
	if ti := ci.Types[0]; ti.Responses != 2 || ti.ResourcesSent != 3 || ti.Resources != 1 {
		t.Fatalf("type info = %+v, want 2 responses carrying 3 resources, 1 held", ti)
	}
	held, ok := ts.srv.Held(ci.ID)
	if want := map[string]string{"a": version(t, ts, typeAddr, "a")}; !ok || !maps.Equal(held[typeAddr], want) {
		t.Fatalf("held = %v, %v; want %v", held, ok, want)
	}
	if _, ok := ts.srv.Held(ci.ID + 1); ok {
		t.Fatal("held reports a stream that does not exist")
	}
}
