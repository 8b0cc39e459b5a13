package ads

import (
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

func version(t *testing.T, ts *testServer, typeURL, name string) string {
	t.Helper()
	v, _, ok := ts.cache.Get(typeURL, name)
	if !ok {
		t.Fatalf("%s %s not in cache", typeURL, name)
	}
	return v
}

func TestInitialWildcardGetsAll(t *testing.T) {
	for _, subscribe := range [][]string{nil, {"*"}} {
		ts := startServer(t)
		ts.cache.Set(typeAddr, "a", body(t, "a"))
		ts.cache.Set(typeAddr, "b", body(t, "b"))
		ts.cache.Set(typeAuth, "p", body(t, "p"))

		c := dial(t, ts.addr, true)
		c.subscribe(typeAddr, subscribe...)
		r := c.recvAck()
		want := map[string]string{"a": version(t, ts, typeAddr, "a"), "b": version(t, ts, typeAddr, "b")}
		if r.GetTypeUrl() != typeAddr || r.GetNonce() == "" || !maps.Equal(got(r), want) || len(r.GetRemovedResources()) != 0 {
			t.Fatalf("initial response = %v, want resources %v", r, want)
		}
		c.expectNone()

		conns := ts.srv.Connections()
		if len(conns) != 1 || conns[0].NodeID == "" || len(conns[0].Types) != 1 || !conns[0].Types[0].Wildcard {
			t.Fatalf("connections = %+v", conns)
		}
		if ti := conns[0].Types[0]; ti.Resources != 2 || ti.LastSentNonce != r.GetNonce() {
			t.Fatalf("type info = %+v", ti)
		}
	}
}

func TestEmptyInitialResponse(t *testing.T) {
	ts := startServer(t)
	c := dial(t, ts.addr, true)
	c.subscribe(typeAuth)
	// A client waits for the first response to know it is in sync.
	if r := c.recvAck(); len(r.GetResources())+len(r.GetRemovedResources()) != 0 {
		t.Fatalf("response = %v, want empty", r)
	}
	c.expectNone()
}

func TestChangePushesOnlyDelta(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	ts.cache.Set(typeAddr, "b", body(t, "b"))
	c := dial(t, ts.addr, true)
	c.subscribe(typeAddr)
	c.recvAck()

	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	r := c.recvAck()
	if want := map[string]string{"a": version(t, ts, typeAddr, "a")}; !maps.Equal(got(r), want) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("change = %v, want %v", r, want)
	}

	// Same bytes, same version: nothing to push.
	ts.cache.Set(typeAddr, "b", body(t, "b"))
	c.expectNone()

	ts.cache.Delete(typeAddr, "b")
	r = c.recvAck()
	if len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{"b"}) {
		t.Fatalf("delete = %v, want removed [b]", r)
	}
	// Deleting what is gone changes nothing.
	ts.cache.Delete(typeAddr, "b")
	c.expectNone()

	st := ts.srv.Stats()
	if st.Pushes != 3 || st.ResourcesPushed != 3 || st.RemovalsPushed != 1 || st.Connected != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestResumeSendsOnlyDifferences(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "same", body(t, "same"))
	ts.cache.Set(typeAddr, "changed", body(t, "changed"))
	ts.cache.Set(typeAddr, "new", body(t, "new"))

	c := dial(t, ts.addr, true)
	c.send(&xdsapi.DeltaDiscoveryRequest{
		Node:    &xdsapi.Node{Id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local"},
		TypeUrl: typeAddr,
		InitialResourceVersions: map[string]string{
			"same":    version(t, ts, typeAddr, "same"),
			"changed": "stale",
			"gone":    "old",
		},
	})
	r := c.recvAck()
	want := map[string]string{"changed": version(t, ts, typeAddr, "changed"), "new": version(t, ts, typeAddr, "new")}
	if !maps.Equal(got(r), want) || !slices.Equal(r.GetRemovedResources(), []string{"gone"}) {
		t.Fatalf("resume = %v, want %v and removed [gone]", r, want)
	}
	c.expectNone()
}

func TestTypesAreIndependent(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	ts.cache.Set(typeAuth, "p", body(t, "p"))
	c := dial(t, ts.addr, true)
	c.subscribe(typeAddr)
	c.subscribe(typeAuth)
	seen := map[string]map[string]string{}
	for range 2 {
		r := c.recvAck()
		seen[r.GetTypeUrl()] = got(r)
	}
	if !maps.Equal(seen[typeAddr], map[string]string{"a": version(t, ts, typeAddr, "a")}) ||
		!maps.Equal(seen[typeAuth], map[string]string{"p": version(t, ts, typeAuth, "p")}) {
		t.Fatalf("initial = %v", seen)
	}

	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	ra := c.recv()
	if ra.GetTypeUrl() != typeAddr || !maps.Equal(got(ra), map[string]string{"a": version(t, ts, typeAddr, "a")}) {
		t.Fatalf("address change = %v", ra)
	}
	// The address response is not ACKed yet; that must not hold back
	// authorizations.
	ts.cache.Set(typeAuth, "p", body(t, "p2"))
	rp := c.recv()
	if rp.GetTypeUrl() != typeAuth || !maps.Equal(got(rp), map[string]string{"p": version(t, ts, typeAuth, "p")}) {
		t.Fatalf("authorization change = %v", rp)
	}
	c.ack(ra)
	c.ack(rp)
	c.expectNone()
}

func TestBurstCoalescesIntoOneDelta(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	ts.cache.Set(typeAddr, "c", body(t, "c"))
	c := dial(t, ts.addr, true)
	c.subscribe(typeAddr)
	first := c.recv() // not ACKed: the burst below arrives while it is in flight

	ts.cache.Set(typeAddr, "a", body(t, "a1"))
	ts.cache.Set(typeAddr, "b", body(t, "b"))
	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	ts.cache.Delete(typeAddr, "c")
	c.expectNone()
	if ti := ts.srv.Connections()[0].Types[0]; !ti.AwaitingACK || ti.PendingNames != 3 {
		t.Fatalf("type info during burst = %+v", ti)
	}

	c.ack(first)
	r := c.recvAck()
	want := map[string]string{"a": version(t, ts, typeAddr, "a"), "b": version(t, ts, typeAddr, "b")}
	if !maps.Equal(got(r), want) || !slices.Equal(r.GetRemovedResources(), []string{"c"}) {
		t.Fatalf("coalesced = %v, want %v and removed [c]", r, want)
	}
	c.expectNone()
	if ti := ts.srv.Connections()[0].Types[0]; ti.LastACKedNonce != r.GetNonce() {
		t.Fatalf("last ACK = %q, want %q", ti.LastACKedNonce, r.GetNonce())
	}
}

func TestExplicitSubscriptions(t *testing.T) {
	ts := startServer(t)
	for _, n := range []string{"a", "b", "c"} {
		ts.cache.Set(typeAddr, n, body(t, n))
	}
	c := dial(t, ts.addr, true)
	c.subscribe(typeAddr, "a", "b")
	if r := c.recvAck(); !slices.Equal(slices.Sorted(maps.Keys(got(r))), []string{"a", "b"}) {
		t.Fatalf("initial = %v, want a and b", r)
	}

	ts.cache.Set(typeAddr, "c", body(t, "c2"))
	c.expectNone()

	c.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: typeAddr, ResourceNamesUnsubscribe: []string{"a"}})
	eventually(t, "unsubscribe", func() bool {
		ti := ts.srv.Connections()[0].Types[0]
		return slices.Equal(ti.Names, []string{"b"})
	})
	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	ts.cache.Set(typeAddr, "b", body(t, "b2"))
	if r := c.recvAck(); !maps.Equal(got(r), map[string]string{"b": version(t, ts, typeAddr, "b")}) {
		t.Fatalf("after unsubscribe = %v, want only b", r)
	}
	c.expectNone()

	c.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: typeAddr, ResourceNamesSubscribe: []string{"c"}})
	if r := c.recvAck(); !maps.Equal(got(r), map[string]string{"c": version(t, ts, typeAddr, "c")}) {
		t.Fatalf("after subscribe c = %v", r)
	}
	// An unsubscribed name is forgotten, not removed.
	ts.cache.Delete(typeAddr, "a")
	c.expectNone()
}

func TestNACKIsRecordedAndStreamContinues(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	c := dial(t, ts.addr, true)
	c.subscribe(typeAddr)
	c.recvAck()

	ts.cache.Set(typeAddr, "a", body(t, "bad"))
	r := c.recv()
	c.send(&xdsapi.DeltaDiscoveryRequest{
		TypeUrl:       typeAddr,
		ResponseNonce: r.GetNonce(),
		ErrorDetail:   &xdsapi.Status{Code: 3, Message: "address a: bad ip"},
	})
	// The rejected version is not sent again.
	c.expectNone()

	ti := ts.srv.Connections()[0].Types[0]
	if ti.NACKs != 1 || ti.LastNACK != "address a: bad ip" || ti.LastNACKNonce != r.GetNonce() || ti.AwaitingACK {
		t.Fatalf("type info after NACK = %+v", ti)
	}
	if st := ts.srv.Stats(); st.NACKs != 1 || st.Connected != 1 {
		t.Fatalf("stats = %+v", st)
	}

	ts.cache.Set(typeAddr, "a", body(t, "fixed"))
	if r := c.recvAck(); !maps.Equal(got(r), map[string]string{"a": version(t, ts, typeAddr, "a")}) {
		t.Fatalf("after NACK = %v", r)
	}
}

func TestClientsGetTheirOwnDeltas(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	ts.cache.Set(typeAddr, "b", body(t, "b"))
	c1 := dial(t, ts.addr, true)
	c2 := dial(t, ts.addr, true)
	c1.subscribe(typeAddr, "a")
	c2.subscribe(typeAddr)
	c1.recvAck()
	c2.recvAck()

	ts.cache.Set(typeAddr, "b", body(t, "b2"))
	if r := c2.recvAck(); !maps.Equal(got(r), map[string]string{"b": version(t, ts, typeAddr, "b")}) {
		t.Fatalf("c2 = %v", r)
	}
	c1.expectNone()

	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	for _, c := range []*testClient{c1, c2} {
		if r := c.recvAck(); !maps.Equal(got(r), map[string]string{"a": version(t, ts, typeAddr, "a")}) {
			t.Fatalf("a change = %v", r)
		}
	}
	if n := len(ts.srv.Connections()); n != 2 {
		t.Fatalf("connections = %d, want 2", n)
	}
}

func TestSlowClientBlocksNobody(t *testing.T) {
	ts := startServer(t)
	// Each type holds more than the slow client's fixed 64 KiB HTTP/2
	// windows (a set window turns off grpc's growing them), under the
	// default 4 MiB message limit. grpc hands the first response to its
	// transport whole; the second, of the other type, then blocks the
	// connection's sender.
	big := make(map[string]*anypb.Any)
	for i := range 30 {
		big[string(rune('A'+i))] = body(t, string(make([]byte, 100<<10))+string(rune(i)))
	}
	ts.cache.Apply(typeAddr, big, nil)
	ts.cache.Apply(typeAuth, big, nil)

	slow := dial(t, ts.addr, false, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	slow.subscribe(typeAddr)
	slow.subscribe(typeAuth)
	eventually(t, "sends to the slow client", func() bool {
		cs := ts.srv.Connections()
		return len(cs) == 1 && len(cs[0].Types) == 2 && cs[0].Types[0].LastSentNonce != "" && cs[0].Types[1].LastSentNonce != ""
	})

	fast := dial(t, ts.addr, true)
	fast.subscribe(typeAddr)
	fast.recvAck()

	written := make(chan struct{})
	go func() {
		defer close(written)
		for i := range 500 {
			ts.cache.Set(typeAddr, "x", body(t, string(rune(i))))
		}
	}()
	select {
	case <-written:
	case <-time.After(wait):
		t.Fatal("writers blocked by a slow client")
	}

	want := version(t, ts, typeAddr, "x")
	deadline := time.After(wait)
	fastResps := 1
	for done := false; !done; {
		select {
		case r := <-fast.resps:
			fastResps++
			fast.ack(r)
			done = got(r)["x"] == want
		case <-deadline:
			t.Fatal("fast client never saw the last write")
		}
	}

	if st := ts.srv.Stats(); st.Pushes != int64(fastResps)+1 {
		t.Fatalf("pushes = %d, want %d: the slow client's send was not blocked", st.Pushes, fastResps)
	}
	// The slow client holds one marked name, not 500 queued responses.
	for _, ti := range ts.srv.Connections()[0].Types {
		if ti.TypeURL == typeAddr && (!ti.AwaitingACK || ti.PendingNames != 1) {
			t.Fatalf("slow client = %+v", ti)
		}
	}
}

func TestDisconnectAndStopCleanUp(t *testing.T) {
	ts := startServer(t)
	ts.cache.Set(typeAddr, "a", body(t, "a"))
	c1 := dial(t, ts.addr, true)
	c1.subscribe(typeAddr)
	c1.recvAck()
	c2 := dial(t, ts.addr, true)
	c2.subscribe(typeAddr)
	c2.recvAck()

	c1.cancel()
	eventually(t, "disconnect", func() bool { return ts.srv.Stats().Connected == 1 })

	ts.gs.Stop()
	eventually(t, "stop", func() bool { return ts.srv.Stats().Connected == 0 && len(ts.srv.Connections()) == 0 })
	// Writers keep working with nobody listening.
	ts.cache.Set(typeAddr, "a", body(t, "a2"))
	// goleak in TestMain checks that no goroutine is left behind.
}
