package proxy

import (
	"io"
	"sort"
	"sync"
	"time"
)

// ConnInfo describes an open connection, for the config dump.
type ConnInfo struct {
	ID  uint64 `json:"id"`
	Pod string `json:"pod"` // UID of the pod it belongs to
	// Direction is "outbound", "inbound" (HBONE) or "inbound_plaintext".
	Direction   string    `json:"direction"`
	Src         string    `json:"src"`
	Dst         string    `json:"dst"`
	SrcIdentity string    `json:"src_identity,omitempty"`
	DstIdentity string    `json:"dst_identity,omitempty"`
	Via         string    `json:"via,omitempty"` // outbound: hbone, waypoint, passthrough
	Started     time.Time `json:"started"`
}

// connTable tracks open connections per pod, for the config dump and so
// that a pod's removal can cut what is left when its drain times out.
// Entries with hidden set are HBONE server connections: cut, not listed.
type connTable struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*entry
}

type entry struct {
	info   ConnInfo
	hidden bool
	closer io.Closer
}

func newConnTable() *connTable {
	return &connTable{m: map[uint64]*entry{}}
}

// add tracks a connection; the returned func untracks it.
func (t *connTable) add(info ConnInfo, hidden bool, c io.Closer) func() {
	t.mu.Lock()
	t.next++
	id := t.next
	info.ID = id
	t.m[id] = &entry{info: info, hidden: hidden, closer: c}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.m, id)
		t.mu.Unlock()
	}
}

func (t *connTable) list() []ConnInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ConnInfo, 0, len(t.m))
	for _, e := range t.m {
		if !e.hidden {
			out = append(out, e.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// closePod cuts the pod's connections and returns how many there were.
func (t *connTable) closePod(uid string) int {
	t.mu.Lock()
	var cs []io.Closer
	for _, e := range t.m {
		if e.info.Pod == uid {
			cs = append(cs, e.closer)
		}
	}
	t.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	return len(cs)
}
