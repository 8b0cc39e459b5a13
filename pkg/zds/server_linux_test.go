package zds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// event is what a ztunnel handler saw.
type event struct {
	kind, uid string
	netns     [2]uint64 // dev, inode of the Add's netns
}

func (e event) String() string { return fmt.Sprintf("%s %s %v", e.kind, e.uid, e.netns) }

func fileID(f *os.File) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}

// recorder is a ztunnel Handler that reports each request on a channel and
// refuses adds of the uids in refuse.
func recorder(refuse ...string) (Handler, <-chan event) {
	ch := make(chan event, 32)
	return func(_ context.Context, req *zdsapi.WorkloadRequest, netns *os.File) error {
		var e event
		switch p := req.GetPayload().(type) {
		case *zdsapi.WorkloadRequest_Add:
			e.kind, e.uid = "add", p.Add.GetUid()
			id, err := fileID(netns)
			netns.Close()
			if err != nil {
				return err
			}
			e.netns = id
		case *zdsapi.WorkloadRequest_Del:
			e.kind, e.uid = "del", p.Del.GetUid()
		case *zdsapi.WorkloadRequest_Keep:
			e.kind, e.uid = "keep", p.Keep.GetUid()
		case *zdsapi.WorkloadRequest_SnapshotSent:
			e.kind = "snapshot_sent"
		}
		ch <- e
		for _, r := range refuse {
			if e.kind == "add" && e.uid == r {
				return fmt.Errorf("cannot enter netns of %s", r)
			}
		}
		return nil
	}, ch
}

func expect(t *testing.T, ch <-chan event, want ...event) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-ch:
			if got != w {
				t.Errorf("got %v, want %v", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for %v", w)
		}
	}
}

// serve runs srv on a fresh socket until the test ends; it returns the
// socket's path.
func serve(t *testing.T, ctx context.Context, wg *sync.WaitGroup, srv *Server) string {
	t.Helper()
	path := filepath.Join(socketDir(t), "zds.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path
}

func runClient(t *testing.T, ctx context.Context, wg *sync.WaitGroup, c *Client) {
	wg.Go(func() {
		if err := c.Run(ctx); err != nil {
			t.Errorf("client: %v", err)
		}
	})
}

func TestSnapshotThenIncremental(t *testing.T) {
	ns1, ns2, ns3 := newNetns(t), newNetns(t), newNetns(t)
	id := func(f *os.File) [2]uint64 { return inode(t, f) }
	goroutines := runtime.NumGoroutine()
	checkLeaks := checkFDs(t)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	srv := &Server{Snapshot: func(context.Context) ([]Workload, error) {
		return []Workload{
			{UID: "a", Info: &zdsapi.WorkloadInfo{Name: "a", Namespace: "ns", ServiceAccount: "sa"}, Netns: ns1},
			{UID: "b", Netns: ns2},
			{UID: "lost-netns"}, // known, but no netns to send: Keep
		}, nil
	}}
	path := serve(t, ctx, &wg, srv)
	handle, events := recorder()
	runClient(t, ctx, &wg, &Client{Path: path, Handle: handle})

	expect(t, events,
		event{"add", "a", id(ns1)},
		event{"add", "b", id(ns2)},
		event{"keep", "lost-netns", [2]uint64{}},
		event{"snapshot_sent", "", [2]uint64{}},
	)
	if err := srv.AddWorkload(ctx, Workload{UID: "c", Netns: ns3}); err != nil {
		t.Fatalf("add: %v", err)
	}
	if err := srv.DelWorkload(ctx, "a"); err != nil {
		t.Fatalf("del: %v", err)
	}
	expect(t, events, event{"add", "c", id(ns3)}, event{"del", "a", [2]uint64{}})

	cancel()
	wg.Wait()
	checkLeaks()
	for i := 0; runtime.NumGoroutine() > goroutines; i++ {
		if i == 100 {
			t.Fatalf("goroutines: %d before, %d after", goroutines, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAckErrorsSurface(t *testing.T) {
	ns1, ns2 := newNetns(t), newNetns(t)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: defers run last first
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	srv := &Server{Snapshot: func(context.Context) ([]Workload, error) {
		return []Workload{{UID: "bad", Netns: ns1}, {UID: "good", Netns: ns2}}, nil
	}}
	path := serve(t, ctx, &wg, srv)
	handle, events := recorder("bad", "worse")
	runClient(t, ctx, &wg, &Client{Path: path, Handle: handle})

	// A refused pod does not stop the snapshot.
	expect(t, events,
		event{"add", "bad", inode(t, ns1)},
		event{"add", "good", inode(t, ns2)},
		event{"snapshot_sent", "", [2]uint64{}},
	)
	err := srv.AddWorkload(ctx, Workload{UID: "worse", Netns: ns1})
	var ackErr *AckError
	if !errors.As(err, &ackErr) || ackErr.Message != "cannot enter netns of worse" {
		t.Fatalf("err = %v, want AckError from the handler", err)
	}
	expect(t, events, event{"add", "worse", inode(t, ns1)})
	// The connection survives a refusal.
	if err := srv.DelWorkload(ctx, "worse"); err != nil {
		t.Fatalf("del after refusal: %v", err)
	}
	expect(t, events, event{"del", "worse", [2]uint64{}})
}

// fakeZtunnel connects and acks nothing by itself.
func fakeZtunnel(t *testing.T, ctx context.Context, path string) *Conn {
	t.Helper()
	z, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { z.Close() })
	if err := z.WriteHello(ctx); err != nil {
		t.Fatal(err)
	}
	return z
}

func readKind(t *testing.T, ctx context.Context, z *Conn) string {
	t.Helper()
	req, netns, err := z.ReadRequest(ctx)
	if err != nil {
		t.Fatalf("fake ztunnel read: %v", err)
	}
	if netns != nil {
		netns.Close()
	}
	switch req.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_Add:
		return "add " + req.GetAdd().GetUid()
	case *zdsapi.WorkloadRequest_SnapshotSent:
		return "snapshot_sent"
	}
	return fmt.Sprint(req)
}

func ack(t *testing.T, ctx context.Context, z *Conn) {
	t.Helper()
	resp := &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{}}}
	if err := z.WriteResponse(ctx, resp); err != nil {
		t.Fatal(err)
	}
}

func TestMissingAck(t *testing.T) {
	ns := newNetns(t)
	const timeout = 200 * time.Millisecond

	t.Run("push", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		srv := &Server{AckTimeout: timeout}
		z := fakeZtunnel(t, ctx, serve(t, ctx, &wg, srv))
		if k := readKind(t, ctx, z); k != "snapshot_sent" {
			t.Fatalf("got %s", k)
		}
		ack(t, ctx, z)

		errc := make(chan error, 1)
		start := time.Now()
		go func() { errc <- srv.AddWorkload(ctx, Workload{UID: "x", Netns: ns}) }()
		if k := readKind(t, ctx, z); k != "add x" {
			t.Fatalf("got %s", k)
		}
		// ...and no ack.
		err := <-errc
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d < timeout {
			t.Errorf("gave up after %v, before the %v ack timeout", d, timeout)
		}
		// The agent drops the connection: ztunnel will reconnect and resync.
		if _, _, err := z.ReadRequest(ctx); !errors.Is(err, io.EOF) {
			t.Errorf("connection after missing ack: %v, want EOF", err)
		}
		for i := 0; ; i++ {
			err := srv.DelWorkload(ctx, "x")
			if errors.Is(err, ErrNotConnected) {
				break
			}
			if i == 100 {
				t.Fatalf("del on a dropped connection: %v, want ErrNotConnected", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		var wg sync.WaitGroup
		defer wg.Wait()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		srv := &Server{AckTimeout: timeout, Snapshot: func(context.Context) ([]Workload, error) {
			return []Workload{{UID: "a", Netns: ns}, {UID: "b", Netns: ns}}, nil
		}}
		z := fakeZtunnel(t, ctx, serve(t, ctx, &wg, srv))
		if k := readKind(t, ctx, z); k != "add a" {
			t.Fatalf("got %s", k)
		}
		// No ack: the snapshot stops there and the connection is dropped.
		if _, _, err := z.ReadRequest(ctx); !errors.Is(err, io.EOF) {
			t.Errorf("after missing ack: %v, want EOF", err)
		}
	})
}

func TestPushWithoutZtunnel(t *testing.T) {
	ns := newNetns(t)
	srv := &Server{}
	if err := srv.AddWorkload(t.Context(), Workload{UID: "x", Netns: ns}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("add: %v, want ErrNotConnected", err)
	}
	if err := srv.DelWorkload(t.Context(), "x"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("del: %v, want ErrNotConnected", err)
	}
	if err := srv.AddWorkload(t.Context(), Workload{UID: "x"}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("add without netns: %v, want ErrInvalidMessage", err)
	}
}

// A ztunnel answers a malformed packet with an Ack carrying the reason and
// goes on serving.
func TestClientAcksInvalidPackets(t *testing.T) {
	ns := newNetns(t)
	path := filepath.Join(socketDir(t), "zds.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	checkLeaks := checkFDs(t)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	handle, events := recorder()
	runClient(t, ctx, &wg, &Client{Path: path, Handle: handle})

	uc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	agent := NewConn(uc)
	rctx := ctxTimeout(t, 5*time.Second)
	if _, err := agent.ReadHello(rctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		payload []byte
		fds     int
		want    string
	}{
		{[]byte("garbage"), 2, "decode request"},
		{marshal(t, addReq("u")), 0, "add carries 0 fds"},
		{marshal(t, addReq("u")), 3, "add carries 3 fds"},
	} {
		if err := sendRaw(t, uc, c.payload, devNull(t, c.fds)); err != nil {
			t.Fatal(err)
		}
		resp, err := agent.ReadResponse(rctx)
		if err != nil {
			t.Fatal(err)
		}
		if msg := resp.GetAck().GetError(); !strings.Contains(msg, ErrInvalidMessage.Error()) || !strings.Contains(msg, c.want) {
			t.Errorf("ack error %q, want %q", msg, c.want)
		}
	}
	if err := agent.WriteRequest(rctx, addReq("u"), ns); err != nil {
		t.Fatal(err)
	}
	if resp, err := agent.ReadResponse(rctx); err != nil || resp.GetAck().GetError() != "" {
		t.Fatalf("valid add: %v, %v", resp, err)
	}
	expect(t, events, event{"add", "u", inode(t, ns)})

	cancel()
	wg.Wait()
	uc.Close()
	checkLeaks()
}

// Pushes go to the newest ztunnel; when it leaves, to the one before.
func TestNewestConnectionTakesPushes(t *testing.T) {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: defers run last first
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv := &Server{}
	path := serve(t, ctx, &wg, srv)

	oldHandle, oldEvents := recorder()
	runClient(t, ctx, &wg, &Client{Path: path, Handle: oldHandle})
	expect(t, oldEvents, event{kind: "snapshot_sent"})

	newCtx, newCancel := context.WithCancel(ctx)
	var newWG sync.WaitGroup
	newHandle, newEvents := recorder()
	runClient(t, newCtx, &newWG, &Client{Path: path, Handle: newHandle})
	expect(t, newEvents, event{kind: "snapshot_sent"})

	if err := srv.DelWorkload(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	expect(t, newEvents, event{kind: "del", uid: "x"})

	newCancel()
	newWG.Wait()
	for i := 0; ; i++ {
		// Until the server notices, pushes may fail on the dead connection.
		if err := srv.DelWorkload(ctx, "y"); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("push after the newest left: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	expect(t, oldEvents, event{kind: "del", uid: "y"})
	select {
	case e := <-newEvents:
		t.Errorf("departed ztunnel got %v", e)
	default:
	}
}
