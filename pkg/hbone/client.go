package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ClientConn is the client side of one HBONE connection, carrying up to the
// server's limit of concurrent CONNECT streams.
type ClientConn struct {
	c *conn
	// limit, if not 0, caps the streams this client opens on the
	// connection below the server's limit.
	limit uint32
	// probe asks the health check to check the connection now.
	probe chan struct{}
	times healthTimes
}

// The health check of client connections. A pooled connection to a peer
// that vanished without a word (its node died, the network split) would
// otherwise take new tunnels, and time them out, until TCP gave up on it
// minutes later. The client sends a PING when a CONNECT goes unanswered for
// probeAfter, or when nothing arrived for keepaliveIdle; a peer that then
// sends not a byte for pingTimeout, not even the ack, ends the connection,
// and the pool dials a new one. Any byte counts, not only the ack: a peer
// busy sending data, with the ack queued behind it, is alive.
type healthTimes struct {
	probeAfter, pingTimeout, keepaliveIdle time.Duration
}

// defaultHealth is what each new client connection takes (tests shorten it).
var defaultHealth = healthTimes{probeAfter: time.Second, pingTimeout: 5 * time.Second, keepaliveIdle: 30 * time.Second}

// streamLimitLocked is how many streams the connection may carry; c.mu
// held.
func (cc *ClientConn) streamLimitLocked() uint32 {
	if cc.limit != 0 && cc.limit < cc.c.peerMaxStreams {
		return cc.limit
	}
	return cc.c.peerMaxStreams
}

// ErrConnFull is returned by Open when the connection carries as many
// streams as the server allows.
var ErrConnFull = errors.New("hbone: connection at its stream limit")

// NewClientConn starts HTTP/2 on an established connection (TLS, handshake
// done) and waits for the server's settings, so that its stream limit is
// known before the first stream is opened.
func NewClientConn(ctx context.Context, nc net.Conn) (*ClientConn, error) {
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("hbone: write preface: %w", err)
	}
	c := newConn(nc, false)
	if err := c.start(); err != nil {
		return nil, err
	}
	select {
	case <-c.settingsSeen:
		cc := &ClientConn{c: c, probe: make(chan struct{}, 1), times: defaultHealth}
		go cc.health()
		return cc, nil
	case <-c.done:
		return nil, c.errOr(ErrConnClosed)
	case <-ctx.Done():
		c.close(ctx.Err())
		return nil, ctx.Err()
	}
}

func (c *conn) errOr(def error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return def
}

// Open starts a CONNECT tunnel to authority (host:port) with the given
// extra header fields, and returns it once the server answered 200.
func (cc *ClientConn) Open(ctx context.Context, authority string, header map[string][]string) (*Stream, error) {
	c := cc.c
	fields := []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":authority", Value: authority}}
	names := make([]string, 0, len(header))
	for name := range header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range header[name] {
			fields = append(fields, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
		}
	}
	// Stream IDs must reach the wire in increasing order, so one is
	// allocated and its HEADERS written under the same lock.
	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return nil, notSent(err)
	}
	c.mu.Lock()
	var refuse error
	switch {
	case c.err != nil:
		refuse = notSent(c.err)
	case c.goingAway:
		refuse = ErrConnClosed
	case uint32(len(c.streams)) >= cc.streamLimitLocked():
		refuse = ErrConnFull
	}
	if refuse != nil {
		c.mu.Unlock()
		c.wmu.Unlock()
		return nil, refuse
	}
	id := c.nextID
	c.nextID += 2
	c.mu.Unlock()
	s := c.makeStream(id)
	c.mu.Lock()
	c.streams[id] = s
	c.mu.Unlock()
	if err := c.writeHeadersLocked(id, false, fields); err != nil {
		err = notSent(c.failWriteLocked(err))
		c.wmu.Unlock()
		return nil, err
	}
	c.wmu.Unlock()

	probe := time.AfterFunc(cc.times.probeAfter, cc.checkSoon)
	defer probe.Stop()
	select {
	case r := <-s.resp:
		if r.err != nil {
			return nil, r.err
		}
		if r.status != "200" {
			_ = s.Close()
			return nil, fmt.Errorf("hbone: CONNECT %s: status %s", authority, r.status)
		}
		return s, nil
	case <-ctx.Done():
		_ = s.Close()
		return nil, ctx.Err()
	}
}

// notSent marks the error of a stream that never reached a live
// connection: it ended before, or as, the stream's HEADERS were written
// (a peer that just went away, while our reader had not yet seen it go).
// As ErrConnClosed, the pool opens the stream again on another
// connection. No data had been sent on it, so a CONNECT the dying peer
// might have seen costs it at most a connection to its app, closed at
// once.
func notSent(err error) error {
	if errors.Is(err, ErrConnClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrConnClosed, err)
}

// checkSoon asks the health check to check the connection now.
func (cc *ClientConn) checkSoon() {
	select {
	case cc.probe <- struct{}{}:
	default: // one is due already
	}
}

// health checks the connection when asked to, and when nothing arrived
// for keepaliveIdle, until it ends; it ends it if the peer is gone.
func (cc *ClientConn) health() {
	c := cc.c
	idle := time.NewTimer(cc.times.keepaliveIdle)
	defer idle.Stop()
	seen := c.received.Load()
	for {
		select {
		case <-c.done:
			return
		case <-cc.probe:
		case <-idle.C:
			if n := c.received.Load(); n != seen {
				seen = n
				idle.Reset(cc.times.keepaliveIdle)
				continue
			}
		}
		if err := cc.check(); err != nil {
			c.close(err)
			return
		}
		seen = c.received.Load()
		idle.Reset(cc.times.keepaliveIdle)
	}
}

// check sends a PING and reports an error if not a byte, not even its
// ack, arrives within pingTimeout.
func (cc *ClientConn) check() error {
	c := cc.c
	before := c.received.Load()
	// Queued, not written here: a write to a peer that stopped reading
	// would block past the timeout.
	if err := c.queueControl(func() error { return c.fr.WritePing(false, [8]byte{}) }); err != nil {
		return err
	}
	timeout := time.NewTimer(cc.times.pingTimeout)
	defer timeout.Stop()
	select {
	case <-c.done:
		return nil
	case <-timeout.C:
	}
	if c.received.Load() != before {
		return nil
	}
	return fmt.Errorf("hbone: peer sent nothing for %s, not even the ack of a PING", cc.times.pingTimeout)
}

// Usable reports whether the connection can take another stream.
func (cc *ClientConn) Usable() bool {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goingAway && uint32(len(c.streams)) < cc.streamLimitLocked()
}

// Idle reports how long the connection has carried no stream (zero if it
// carries one).
func (cc *ClientConn) Idle() time.Duration {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.streams) > 0 {
		return 0
	}
	return time.Since(c.idleSince)
}

// Done is closed when the connection has ended.
func (cc *ClientConn) Done() <-chan struct{} { return cc.c.done }

// Close ends the connection and every stream on it.
func (cc *ClientConn) Close() error {
	cc.c.close(ErrConnClosed)
	return nil
}
