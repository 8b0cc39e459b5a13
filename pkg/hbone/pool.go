package hbone

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// DefaultIdleTimeout is how long a pooled connection may carry no stream
// before it is closed.
const DefaultIdleTimeout = 5 * time.Minute

// Pool shares HBONE connections between tunnels with the same key. ztunnel
// keys by {source identity, destination identity, source IP, destination
// IP}, so a connection never carries another workload's identity. A key gets
// another connection when all of its connections are at their stream limit;
// connections idle for IdleTimeout are closed.
type Pool[K comparable] struct {
	// Dial returns an established (TLS, handshake done) connection for key.
	Dial        func(ctx context.Context, key K) (net.Conn, error)
	IdleTimeout time.Duration
	// MaxStreamsPerConn caps the streams one connection carries (0: as
	// many as the server allows, 100 for ours). Fewer streams per
	// connection spread a key's tunnels over more connections, which
	// costs handshakes and sockets but lets their encryption run in
	// parallel.
	MaxStreamsPerConn int

	mu      sync.Mutex
	conns   map[K][]*ClientConn
	dialing map[K]chan struct{} // closed when the dial for the key ends
	closed  bool
	stop    chan struct{}
	reaper  sync.WaitGroup
}

// maxRefusedRetries bounds how often Open opens a stream again after the
// peer refused it, so that a peer refusing every stream on a connection it
// keeps open (at its stream limit) is not asked for ever.
const maxRefusedRetries = 3

// ErrPoolClosed is returned by Open after Close.
var ErrPoolClosed = errors.New("hbone: pool closed")

// Open starts a tunnel to authority over a connection for key.
func (p *Pool[K]) Open(ctx context.Context, key K, authority string, header map[string][]string) (*Stream, error) {
	refused := 0
	for {
		cc, err := p.conn(ctx, key)
		if err != nil {
			return nil, err
		}
		s, err := cc.Open(ctx, authority, header)
		// Another caller may have taken the last stream slot, or the
		// connection may have just ended: pick again. So too when the
		// peer refused the stream unprocessed, as a draining peer does:
		// its connection is going away, so the next pick is another.
		if errors.Is(err, ErrStreamRefused) {
			refused++
			if refused > maxRefusedRetries || ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		if errors.Is(err, ErrConnFull) || errors.Is(err, ErrConnClosed) {
			continue
		}
		return s, err
	}
}

// conn returns a usable connection for key, dialing one if needed; callers
// that need one for the same key while it is dialed wait for that dial.
func (p *Pool[K]) conn(ctx context.Context, key K) (*ClientConn, error) {
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		if p.conns == nil {
			p.conns = map[K][]*ClientConn{}
			p.dialing = map[K]chan struct{}{}
			p.stop = make(chan struct{})
			p.reaper.Add(1)
			go p.reap()
		}
		live := p.conns[key][:0]
		var usable *ClientConn
		for _, cc := range p.conns[key] {
			select {
			case <-cc.Done():
				continue
			default:
			}
			live = append(live, cc)
			if usable == nil && cc.Usable() {
				usable = cc
			}
		}
		p.conns[key] = live
		if usable != nil {
			p.mu.Unlock()
			return usable, nil
		}
		wait, inFlight := p.dialing[key]
		if !inFlight {
			break
		}
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
	}
	done := make(chan struct{})
	p.dialing[key] = done
	p.mu.Unlock()

	cc, err := p.dial(ctx, key)

	p.mu.Lock()
	delete(p.dialing, key)
	close(done)
	if err == nil {
		if p.closed {
			cc.Close()
			err = ErrPoolClosed
		} else {
			p.conns[key] = append(p.conns[key], cc)
		}
	}
	p.mu.Unlock()
	return cc, err
}

func (p *Pool[K]) dial(ctx context.Context, key K) (*ClientConn, error) {
	nc, err := p.Dial(ctx, key)
	if err != nil {
		return nil, err
	}
	cc, err := NewClientConn(ctx, nc)
	if err != nil {
		return nil, err
	}
	if p.MaxStreamsPerConn > 0 {
		cc.limit = uint32(p.MaxStreamsPerConn)
	}
	return cc, nil
}

// reap closes connections that stayed idle too long.
func (p *Pool[K]) reap() {
	defer p.reaper.Done()
	idle := p.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	t := time.NewTicker(idle / 4)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		for key, ccs := range p.conns {
			kept := ccs[:0]
			for _, cc := range ccs {
				if cc.Idle() >= idle {
					cc.Close()
					continue
				}
				kept = append(kept, cc)
			}
			if len(kept) == 0 {
				delete(p.conns, key)
			} else {
				p.conns[key] = kept
			}
		}
		p.mu.Unlock()
	}
}

// Len returns the number of open connections, for metrics and tests.
func (p *Pool[K]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ccs := range p.conns {
		for _, cc := range ccs {
			select {
			case <-cc.Done():
			default:
				n++
			}
		}
	}
	return n
}

// Close closes every connection and stops the pool.
func (p *Pool[K]) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for _, ccs := range p.conns {
		for _, cc := range ccs {
			cc.Close()
		}
	}
	if p.stop != nil {
		close(p.stop)
	}
	p.mu.Unlock()
	p.reaper.Wait()
}
