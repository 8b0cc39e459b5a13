package zds

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

func addReq(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{
		Uid:          uid,
		WorkloadInfo: &zdsapi.WorkloadInfo{Name: "p", Namespace: "ns", ServiceAccount: "sa"},
	}}}
}

func delReq(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}}
}

func keepReq(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}}
}

var snapshotReq = &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The behaviour ztunnel relies on: the fd that arrives with an Add is the
// pod's network namespace itself.
func TestAddCarriesNetns(t *testing.T) {
	ns := newNetns(t) // not the test's own netns: newNetns checks
	checkLeaks := checkFDs(t)
	a, z := pair(t)
	agent, ztunnel := NewConn(a), NewConn(z)
	ctx := ctxTimeout(t, 5*time.Second)

	if err := agent.WriteRequest(ctx, addReq("uid-1"), ns); err != nil {
		t.Fatal(err)
	}
	req, got, err := ztunnel.ReadRequest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if req.GetAdd().GetUid() != "uid-1" || req.GetAdd().GetWorkloadInfo().GetServiceAccount() != "sa" {
		t.Errorf("got %v", req)
	}
	if got == nil {
		t.Fatal("no netns with the add")
	}
	if inode(t, got) != inode(t, ns) {
		t.Error("received fd is not the sent netns")
	}
	got.Close()

	// Requests other than Add travel alone.
	for _, r := range []*zdsapi.WorkloadRequest{delReq("uid-1"), keepReq("uid-2"), snapshotReq} {
		if err := agent.WriteRequest(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
		req, netns, err := ztunnel.ReadRequest(ctx)
		if err != nil || netns != nil || !proto.Equal(req, r) {
			t.Errorf("sent %v, got %v, netns %v, err %v", r, req, netns, err)
		}
	}
	a.Close()
	z.Close()
	checkLeaks()
}

func TestWriteRequestRefusesBadRequests(t *testing.T) {
	ns := newNetns(t)
	a, _ := pair(t)
	agent := NewConn(a)
	for name, c := range map[string]struct {
		req   *zdsapi.WorkloadRequest
		netns bool
	}{
		"add without netns": {addReq("u"), false},
		"add without uid":   {addReq(""), true},
		"del with netns":    {delReq("u"), true},
		"del without uid":   {delReq(""), false},
		"empty request":     {&zdsapi.WorkloadRequest{}, false},
	} {
		var netns = ns
		if !c.netns {
			netns = nil
		}
		err := agent.WriteRequest(t.Context(), c.req, netns)
		if !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s: err = %v, want ErrInvalidMessage", name, err)
		}
	}
}

// What a hostile or broken agent might send. Every case must be refused with
// ErrInvalidMessage, close every fd that came with it, and leave the
// connection usable.
func TestReadRequestRejects(t *testing.T) {
	a, z := pair(t)
	ztunnel := NewConn(z)
	ctx := ctxTimeout(t, 10*time.Second)

	for _, c := range []struct {
		name    string
		payload []byte
		fds     int
		want    string
	}{
		{"not protobuf", []byte{0xff, 0xff, 0xff}, 0, "decode request"},
		{"not protobuf, with fd", []byte{0x0a, 0x05, 'x'}, 1, "decode request"},
		{"unknown fields only", []byte{0x48, 0x01}, 0, "without a payload"},
		{"add without fd", marshal(t, addReq("u")), 0, "add carries 0 fds"},
		{"add with two fds", marshal(t, addReq("u")), 2, "add carries 2 fds"},
		{"add without uid", marshal(t, addReq("")), 1, "add without a uid"},
		{"del with fd", marshal(t, delReq("u")), 1, "del carries 1 fds"},
		{"del without uid", marshal(t, delReq("")), 0, "del without a uid"},
		{"keep without uid", marshal(t, keepReq("")), 0, "keep without a uid"},
		{"snapshot with fd", marshal(t, snapshotReq), 1, "snapshot_sent carries 1 fds"},
		{"truncated packet", append(marshal(t, addReq("u")), make([]byte, maxPacket)...), 1, "longer than"},
		{"too many fds", marshal(t, addReq("u")), 3 * maxFDs, "control data truncated"},
		// del{uid: "\xff"}: proto3 strings must be UTF-8.
		{"invalid utf-8 uid", []byte{0x12, 0x03, 0x12, 0x01, 0xff}, 0, "decode request"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkLeaks := checkFDs(t)
			if err := sendRaw(t, a, c.payload, devNull(t, c.fds)); err != nil {
				t.Fatal(err)
			}
			req, netns, err := ztunnel.ReadRequest(ctx)
			if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrInvalidMessage with %q", err, c.want)
			}
			if req != nil || netns != nil {
				t.Errorf("got request %v, netns %v with the error", req, netns)
			}
			checkLeaks()

			// The next packet reads fine.
			if err := sendRaw(t, a, marshal(t, delReq("next")), nil); err != nil {
				t.Fatal(err)
			}
			if req, _, err := ztunnel.ReadRequest(ctx); err != nil || req.GetDel().GetUid() != "next" {
				t.Errorf("after rejection: %v, %v", req, err)
			}
		})
	}
}

func TestHelloAndResponsesRejectFDs(t *testing.T) {
	a, z := pair(t)
	agent := NewConn(a)
	ctx := ctxTimeout(t, 5*time.Second)
	checkLeaks := checkFDs(t)

	if err := sendRaw(t, z, marshal(t, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}), devNull(t, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.ReadHello(ctx); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("hello with fd: err = %v", err)
	}
	if err := sendRaw(t, z, []byte{0x08, 0x00}, nil); err != nil { // version NOT_USED
		t.Fatal(err)
	}
	if _, err := agent.ReadHello(ctx); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("hello without version: err = %v", err)
	}
	ack := marshal(t, &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{}}})
	if err := sendRaw(t, z, ack, devNull(t, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.ReadResponse(ctx); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("ack with fds: err = %v", err)
	}
	if err := sendRaw(t, z, []byte{0x10, 0x01}, nil); err != nil { // no ack in it
		t.Fatal(err)
	}
	if _, err := agent.ReadResponse(ctx); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("response without ack: err = %v", err)
	}
	checkLeaks()

	if err := NewConn(z).WriteHello(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := agent.ReadHello(ctx); err != nil || h.GetVersion() != zdsapi.Version_V1 {
		t.Errorf("hello: %v, %v", h, err)
	}
}

// A zero-length packet reads as end of stream; fds attached to it are
// closed all the same.
func TestEmptyPacketWithFD(t *testing.T) {
	a, z := pair(t)
	checkLeaks := checkFDs(t)
	sendEmpty(t, a, devNull(t, 1)[0])
	_, netns, err := NewConn(z).ReadRequest(ctxTimeout(t, 5*time.Second))
	if !errors.Is(err, io.EOF) || netns != nil {
		t.Errorf("err = %v, netns = %v, want io.EOF", err, netns)
	}
	checkLeaks()
}

func TestReadFollowsContext(t *testing.T) {
	a, z := pair(t)
	agent := NewConn(a)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := agent.ReadResponse(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: err = %v", err)
	}

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := agent.ReadResponse(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: err = %v", err)
	}

	// Neither leaves a deadline behind for the next call.
	ack := &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{Error: "x"}}}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = NewConn(z).WriteResponse(context.Background(), ack)
	}()
	resp, err := agent.ReadResponse(ctxTimeout(t, 5*time.Second))
	if err != nil || resp.GetAck().GetError() != "x" {
		t.Errorf("after timeouts: %v, %v", resp, err)
	}
}
