package zds

import (
	"errors"
	"testing"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

func TestCheckRequest(t *testing.T) {
	add := func(uid string) *zdsapi.WorkloadRequest {
		return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid}}}
	}
	del := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: "u"}}}
	keep := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{}}}
	snap := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}
	for _, c := range []struct {
		name string
		req  *zdsapi.WorkloadRequest
		fds  int
		ok   bool
	}{
		{"add", add("u"), 1, true},
		{"add, no fd", add("u"), 0, false},
		{"add, two fds", add("u"), 2, false},
		{"add, no uid", add(""), 1, false},
		{"add, nil body", &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{}}, 1, false},
		{"del", del, 0, true},
		{"del, fd", del, 1, false},
		{"keep, no uid", keep, 0, false},
		{"snapshot sent", snap, 0, true},
		{"snapshot sent, fd", snap, 1, false},
		{"empty", &zdsapi.WorkloadRequest{}, 0, false},
	} {
		err := checkRequest(c.req, c.fds)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidMessage)) {
			t.Errorf("%s: err = %v", c.name, err)
		}
	}
}

func TestDecodeHelloAndResponse(t *testing.T) {
	if h, err := decodeHello([]byte{0x08, 0x01}, 0); err != nil || h.GetVersion() != zdsapi.Version_V1 {
		t.Errorf("hello v1: %v, %v", h, err)
	}
	for name, c := range map[string]struct {
		b   []byte
		fds int
	}{
		"empty":     {nil, 0},
		"not used":  {[]byte{0x08, 0x00}, 0},
		"with fd":   {[]byte{0x08, 0x01}, 1},
		"truncated": {[]byte{0x08}, 0},
	} {
		if _, err := decodeHello(c.b, c.fds); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("hello %s: err = %v", name, err)
		}
	}
	if r, err := decodeResponse([]byte{0x0a, 0x03, 0x0a, 0x01, 'x'}, 0); err != nil || r.GetAck().GetError() != "x" {
		t.Errorf("ack: %v, %v", r, err)
	}
	if _, err := decodeResponse(nil, 0); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("response without ack: err = %v", err)
	}
}
