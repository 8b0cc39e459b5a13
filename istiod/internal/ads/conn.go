package ads

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

// ConnectionInfo describes one open stream, for debug endpoints.
type ConnectionInfo struct {
	ID       uint64
	NodeID   string
	PeerAddr string // the client's address as the transport saw it
	// ProxyVersion is the node's ISTIO_VERSION metadata, else its user
	// agent version; empty until the node is known.
	ProxyVersion string
	ConnectedAt  time.Time
	Types        []TypeInfo // sorted by TypeURL
}

// TypeInfo is the state of one type on one stream.
type TypeInfo struct {
	TypeURL  string
	Wildcard bool
	Names    []string // explicit subscriptions, sorted
	// Resources is how many resources the client holds, as far as the
	// server knows: reported on resume, plus sent, minus removed.
	Resources         int
	LastSentNonce     string
	LastSentAt        time.Time
	LastSentResources int
	LastSentRemoved   int
	Responses         int  // responses of this type sent on this stream
	ResourcesSent     int  // resources those responses carried
	AwaitingACK       bool // LastSentNonce is neither ACKed nor NACKed
	PendingNames      int  // changed names waiting for the next response
	LastACKedNonce    string
	LastACKedAt       time.Time
	NACKs             int
	LastNACKNonce     string
	LastNACK          string
}

// typeState is what a connection tracks for one type URL.
type typeState struct {
	wildcard bool
	names    map[string]struct{} // explicit subscriptions
	// known maps the names the client holds to their versions. Sent
	// versions are recorded at send time, before the ACK: after a NACK the
	// client still has the old version, but resending the rejected one
	// would only be rejected again, so it waits for the next change.
	known  map[string]string
	dirty  map[string]struct{} // names to compare with the cache
	resync bool                // compare every subscribed and known name
	// mustRespond makes the first response of a subscription go out even
	// if empty: a client waits for it to know it is in sync.
	mustRespond bool
	// inflight is the nonce of the response not yet ACKed or NACKed. While
	// it is set nothing more of this type is sent; changes merge into
	// dirty, so a burst leaves as one response and a client that does not
	// read costs one marked set, not a queue.
	inflight string
	// since is when the oldest change not yet sent arrived; zero if none.
	since time.Time

	responses, resourcesSent       int
	lastSentNonce                  string
	lastSentAt                     time.Time
	lastSentResources, lastRemoved int
	lastACKedNonce                 string
	lastACKedAt                    time.Time
	nacks                          int
	lastNACKNonce, lastNACK        string
}

func newTypeState() *typeState {
	return &typeState{names: map[string]struct{}{}, known: map[string]string{}, dirty: map[string]struct{}{}}
}

// mark records that a change arrived at now, unless an older one is
// still waiting.
func (ts *typeState) mark(now time.Time) {
	if ts.since.IsZero() {
		ts.since = now
	}
}

func (ts *typeState) subscribed(name string) bool {
	if ts.wildcard {
		return true
	}
	_, ok := ts.names[name]
	return ok
}

// conn is one DeltaAggregatedResources stream.
type conn struct {
	id          uint64
	s           *Server
	connectedAt time.Time
	peerAddr    string
	wake        chan struct{} // capacity 1: a pending wake-up absorbs others

	mu    sync.Mutex
	node  *xdsapi.Node
	types map[string]*typeState
}

func (c *conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) nodeID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node.GetId()
}

// changed is called by the cache, from writers' goroutines: it only marks
// names, so writers never wait for this client.
func (c *conn) changed(typeURL string, names []string) {
	c.mu.Lock()
	ts := c.types[typeURL]
	if ts != nil {
		ts.mark(time.Now())
		for _, n := range names {
			ts.dirty[n] = struct{}{}
		}
	}
	c.mu.Unlock()
	if ts != nil {
		c.poke()
	}
}

// handle applies one request: ACK or NACK, then subscription changes.
func (c *conn) handle(req *xdsapi.DeltaDiscoveryRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node == nil && req.GetNode() != nil {
		// Envoy sends the node only on the first request.
		c.node = req.GetNode()
		c.s.log.Info("xds client connected", "conn", c.id, "node", c.node.GetId())
	}
	t := req.GetTypeUrl()
	if t == "" {
		return errNoType
	}
	now := time.Now()
	ts := c.types[t]
	if ts == nil {
		ts = newTypeState()
		c.types[t] = ts
		ts.mark(now)
		ts.mustRespond = true
		ts.resync = true
		// A resuming client says what it has; the resync then sends only
		// differences and removes what no longer exists.
		maps.Copy(ts.known, req.GetInitialResourceVersions())
		// An empty first subscription is the legacy form of wildcard.
		ts.wildcard = len(req.GetResourceNamesSubscribe()) == 0
	}

	if nonce := req.GetResponseNonce(); nonce != "" {
		if e := req.GetErrorDetail(); e != nil {
			ts.nacks++
			ts.lastNACKNonce, ts.lastNACK = nonce, e.GetMessage()
			c.s.nacks.Add(1)
			if o := c.s.obs(); o != nil {
				o.Rejected(t)
			}
			c.s.log.Warn("xds client rejected response", "conn", c.id, "node", c.node.GetId(),
				"type", t, "nonce", nonce, "code", e.GetCode(), "message", e.GetMessage())
		} else {
			ts.lastACKedNonce, ts.lastACKedAt = nonce, now
		}
		// A reply to an older response says nothing about the latest.
		if nonce == ts.inflight {
			ts.inflight = ""
		}
	}

	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			if !ts.wildcard {
				ts.wildcard = true
				ts.resync = true
				ts.mark(now)
			}
			continue
		}
		if _, ok := ts.names[n]; !ok {
			ts.names[n] = struct{}{}
			ts.dirty[n] = struct{}{}
			ts.mark(now)
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			ts.wildcard = false
		} else {
			delete(ts.names, n)
		}
	}
	if len(req.GetResourceNamesUnsubscribe()) > 0 {
		// The client drops what it no longer subscribes to, so we forget
		// it too: no removal is due, and a later subscribe resends it.
		for n := range ts.known {
			if !ts.subscribed(n) {
				delete(ts.known, n)
				delete(ts.dirty, n)
			}
		}
	}
	return nil
}

// next builds the next response to send, or returns nil if nothing is due,
// with the time the oldest change it carries arrived.
func (c *conn) next() (*xdsapi.DeltaDiscoveryResponse, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range slices.Sorted(maps.Keys(c.types)) {
		ts := c.types[t]
		waiting := ts.since
		if resp := c.build(t, ts); resp != nil {
			return resp, waiting
		}
	}
	return nil, time.Time{}
}

func (c *conn) build(t string, ts *typeState) *xdsapi.DeltaDiscoveryResponse {
	if ts.inflight != "" || (!ts.resync && len(ts.dirty) == 0 && !ts.mustRespond) {
		return nil
	}
	// Whatever was waiting is now either in this response or found to be
	// no change at all.
	ts.since = time.Time{}
	resp := &xdsapi.DeltaDiscoveryResponse{TypeUrl: t}
	c.s.cache.view(t, func(res map[string]entry) {
		names := ts.dirty
		if ts.resync {
			names = maps.Clone(ts.dirty)
			for n := range ts.names {
				names[n] = struct{}{}
			}
			for n := range ts.known {
				names[n] = struct{}{}
			}
			if ts.wildcard {
				for n := range res {
					names[n] = struct{}{}
				}
			}
		}
		for _, n := range slices.Sorted(maps.Keys(names)) {
			e, exists := res[n]
			have, held := ts.known[n]
			switch {
			case exists && ts.subscribed(n):
				if !held || have != e.version {
					resp.Resources = append(resp.Resources, &xdsapi.Resource{Name: n, Version: e.version, Resource: e.body})
					ts.known[n] = e.version
				}
			case held && !exists:
				resp.RemovedResources = append(resp.RemovedResources, n)
				delete(ts.known, n)
			case held:
				delete(ts.known, n)
			}
		}
	})
	clear(ts.dirty)
	ts.resync = false
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && !ts.mustRespond {
		return nil
	}
	ts.mustRespond = false
	resp.Nonce = c.s.nextNonce()
	ts.inflight = resp.Nonce
	ts.lastSentNonce, ts.lastSentAt = resp.Nonce, time.Now()
	ts.lastSentResources, ts.lastRemoved = len(resp.Resources), len(resp.RemovedResources)
	ts.responses++
	ts.resourcesSent += len(resp.Resources)
	return resp
}

func (c *conn) info() ConnectionInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	ci := ConnectionInfo{ID: c.id, NodeID: c.node.GetId(), PeerAddr: c.peerAddr, ProxyVersion: proxyVersion(c.node), ConnectedAt: c.connectedAt}
	for _, t := range slices.Sorted(maps.Keys(c.types)) {
		ts := c.types[t]
		ci.Types = append(ci.Types, TypeInfo{
			TypeURL:           t,
			Wildcard:          ts.wildcard,
			Names:             slices.Sorted(maps.Keys(ts.names)),
			Resources:         len(ts.known),
			LastSentNonce:     ts.lastSentNonce,
			LastSentAt:        ts.lastSentAt,
			LastSentResources: ts.lastSentResources,
			LastSentRemoved:   ts.lastRemoved,
			Responses:         ts.responses,
			ResourcesSent:     ts.resourcesSent,
			AwaitingACK:       ts.inflight != "",
			PendingNames:      len(ts.dirty),
			LastACKedNonce:    ts.lastACKedNonce,
			LastACKedAt:       ts.lastACKedAt,
			NACKs:             ts.nacks,
			LastNACKNonce:     ts.lastNACKNonce,
			LastNACK:          ts.lastNACK,
		})
	}
	return ci
}

func (c *conn) held() map[string]map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[string]string, len(c.types))
	for t, ts := range c.types {
		out[t] = maps.Clone(ts.known)
	}
	return out
}

// proxyVersion is the version a node reports: Istio's proxies put it in
// the ISTIO_VERSION metadata, Envoy-style clients in the user agent.
func proxyVersion(n *xdsapi.Node) string {
	if v := n.GetMetadata().GetFields()["ISTIO_VERSION"].GetStringValue(); v != "" {
		return v
	}
	return n.GetUserAgentVersion()
}
