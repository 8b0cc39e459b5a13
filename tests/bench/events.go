package bench

import (
	"encoding/json"
	"io"
	"sync"
)

// A child talks to the harness through its stdout, one JSON event per line.
// A pipe crosses network namespaces for free, and it closes by itself when
// the child dies, so the harness never waits on a dead child.

const (
	evReady  = "ready"  // the child listens (Addr) or is about to work
	evConn   = "conn"   // the server finished a connection (Conn)
	evMark   = "mark"   // the client starts or ends a measured window (Mark)
	evResult = "result" // the client's figures (Result), its last word
)

// Marks the client emits around its measured window, so that the harness
// reads the proxies' counters over exactly that window.
const (
	markStart = "start"
	markEnd   = "end"
)

type event struct {
	Type   string        `json:"type"`
	Addr   string        `json:"addr,omitempty"`
	Conn   *ConnReport   `json:"conn,omitempty"`
	Mark   string        `json:"mark,omitempty"`
	Result *ClientResult `json:"result,omitempty"`
}

// ConnReport is what the server saw of one connection.
type ConnReport struct {
	// Remote is the source address as the server saw it: the client pod's
	// own address on the direct path, which proves the topology routes
	// without NAT.
	Remote   string `json:"remote"`
	Mode     string `json:"mode"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
}

// emitter writes events; the server's connection handlers share it.
type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newEmitter(w io.Writer) *emitter { return &emitter{enc: json.NewEncoder(w)} }

func (e *emitter) emit(ev event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.enc.Encode(ev)
}
