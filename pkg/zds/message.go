package zds

import (
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// Real messages are a few hundred bytes (names are capped at 253 bytes), so
// a larger packet is a bug or an attack; it arrives truncated and is refused.
const maxPacket = 16 << 10

func decodeHello(payload []byte, nfds int) (*zdsapi.ZdsHello, error) {
	if nfds != 0 {
		return nil, invalidf("hello carries %d fds", nfds)
	}
	h := &zdsapi.ZdsHello{}
	if err := proto.Unmarshal(payload, h); err != nil {
		return nil, invalidf("decode hello: %v", err)
	}
	// NOT_USED is also what an empty or foreign packet decodes to.
	if h.GetVersion() == zdsapi.Version_NOT_USED {
		return nil, invalidf("hello without a version")
	}
	return h, nil
}

func decodeRequest(payload []byte, nfds int) (*zdsapi.WorkloadRequest, error) {
	req := &zdsapi.WorkloadRequest{}
	if err := proto.Unmarshal(payload, req); err != nil {
		return nil, invalidf("decode request: %v", err)
	}
	if err := checkRequest(req, nfds); err != nil {
		return nil, err
	}
	return req, nil
}

// checkRequest holds a request to the protocol's rules, on sending and on
// receiving alike; nfds is the number of fds travelling with it.
func checkRequest(req *zdsapi.WorkloadRequest, nfds int) error {
	var kind, uid string
	wantFDs, needUID := 0, true
	switch p := req.GetPayload().(type) {
	case *zdsapi.WorkloadRequest_Add:
		kind, uid, wantFDs = "add", p.Add.GetUid(), 1
	case *zdsapi.WorkloadRequest_Keep:
		kind, uid = "keep", p.Keep.GetUid()
	case *zdsapi.WorkloadRequest_Del:
		kind, uid = "del", p.Del.GetUid()
	case *zdsapi.WorkloadRequest_SnapshotSent:
		kind, needUID = "snapshot_sent", false
	case nil:
		// Also what bytes made only of unknown fields decode to.
		return invalidf("request without a payload")
	default:
		return invalidf("unknown request %T", p)
	}
	if needUID && uid == "" {
		return invalidf("%s without a uid", kind)
	}
	if nfds != wantFDs {
		return invalidf("%s carries %d fds, want %d", kind, nfds, wantFDs)
	}
	return nil
}

func decodeResponse(payload []byte, nfds int) (*zdsapi.WorkloadResponse, error) {
	if nfds != 0 {
		return nil, invalidf("response carries %d fds", nfds)
	}
	resp := &zdsapi.WorkloadResponse{}
	if err := proto.Unmarshal(payload, resp); err != nil {
		return nil, invalidf("decode response: %v", err)
	}
	if resp.GetAck() == nil {
		return nil, invalidf("response without an ack")
	}
	return resp, nil
}
