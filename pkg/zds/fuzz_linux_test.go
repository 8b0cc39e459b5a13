package zds

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

func requestSeeds(f *testing.F) {
	for _, s := range []struct {
		payload []byte
		fds     uint8
	}{
		{marshal(f, addReq("0b1e8a52-5f0a-4c1e-9d2b-6f1c3b7a9e10")), 1},
		{marshal(f, addReq("uid")), 0},
		{marshal(f, addReq("uid")), 2},
		{marshal(f, addReq("")), 1},
		{marshal(f, delReq("uid")), 0},
		{marshal(f, delReq("uid")), 1},
		{marshal(f, keepReq("uid")), 0},
		{marshal(f, snapshotReq), 0},
		{marshal(f, &zdsapi.ZdsHello{Version: zdsapi.Version_V1}), 0},
		{[]byte{0x12, 0x03, 0x12, 0x01, 0xff}, 0},
		{[]byte{0xff, 0xff}, 1},
		{nil, 0},
	} {
		f.Add(s.payload, s.fds)
	}
}

// FuzzReadRequest sends arbitrary packets, with up to a few more fds than a
// packet may carry, over a real socket. Reading must yield a valid request
// or ErrInvalidMessage, and must leave no fd open that it does not return.
func FuzzReadRequest(f *testing.F) {
	requestSeeds(f)
	agent, z := pair(f)
	ztunnel := NewConn(z)
	openFDs(f) // let the runtime open its own fds (netpoll) before counting

	f.Fuzz(func(t *testing.T, payload []byte, nfds uint8) {
		n := int(nfds) % (maxFDs + 4)
		before := openFDs(t)
		if err := sendRaw(t, agent, payload, devNull(t, n)); err != nil {
			// Larger than the socket takes: nothing was sent.
			if !errors.Is(err, unix.EMSGSIZE) {
				t.Fatalf("send: %v", err)
			}
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req, netns, err := ztunnel.ReadRequest(ctx)
			cancel()
			switch {
			case err == nil:
				if (req.GetAdd() != nil) != (netns != nil) {
					t.Fatalf("request %v came with netns %v", req, netns)
				}
				if err := checkRequest(req, fdCount(netns)); err != nil {
					t.Fatalf("accepted an invalid request: %v", err)
				}
				if netns != nil {
					netns.Close()
				}
			case req != nil || netns != nil:
				t.Fatalf("error %v came with request %v, netns %v", err, req, netns)
			case errors.Is(err, ErrInvalidMessage):
			case len(payload) == 0 && n == 0 && errors.Is(err, io.EOF):
				// A zero-length packet reads as end of stream.
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if after := openFDs(t); after != before {
			t.Fatalf("fd leak: %d open before, %d after", before, after)
		}
	})
}

// FuzzDecodeRequest checks the request rules alone, at full speed: whatever
// is accepted is valid and survives re-encoding.
func FuzzDecodeRequest(f *testing.F) {
	requestSeeds(f)
	f.Fuzz(func(t *testing.T, payload []byte, nfds uint8) {
		n := int(nfds) % 4
		req, err := decodeRequest(payload, n)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) || req != nil {
				t.Fatalf("got %v, %v", req, err)
			}
			return
		}
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode %v: %v", req, err)
		}
		again, err := decodeRequest(b, n)
		if err != nil || !proto.Equal(req, again) {
			t.Fatalf("re-decoded %v as %v, %v", req, again, err)
		}
	})
}

// FuzzParseRights feeds arbitrary control data to the SCM_RIGHTS parser,
// which must neither panic nor read past what it was given.
func FuzzParseRights(f *testing.F) {
	f.Add([]byte{})
	f.Add(unix.UnixRights(7))
	f.Add(unix.UnixRights(7, 8, 9))
	f.Add(append(unix.UnixRights(7), unix.UnixRights(8, 9)...))
	f.Add(unix.UnixRights(7)[:unix.SizeofCmsghdr-1])
	f.Add(unix.UnixRights(7, 8)[:unix.CmsgLen(6)])
	f.Fuzz(func(t *testing.T, oob []byte) {
		fds, err := parseRights(oob)
		if len(fds)*4 > len(oob) {
			t.Fatalf("%d fds from %d bytes", len(fds), len(oob))
		}
		for _, fd := range fds {
			if fd < 0 {
				t.Fatalf("negative fd %d (err %v)", fd, err)
			}
		}
	})
}
