package hbone

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type poolKey struct{ src, dst string }

// countingPool dials the test server and counts dials per key.
func countingPool(t *testing.T, cli *tls.Config, addr string, idle time.Duration) (*Pool[poolKey], *atomic.Int32) {
	var dials atomic.Int32
	p := &Pool[poolKey]{
		IdleTimeout: idle,
		Dial: func(ctx context.Context, _ poolKey) (net.Conn, error) {
			dials.Add(1)
			d := tls.Dialer{Config: cli}
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	t.Cleanup(p.Close)
	return p, &dials
}

func TestPoolSharesConnectionsPerKey(t *testing.T) {
	cli, srv := tlsPair(t)
	hold := make(chan struct{})
	addr := listen(t, srv, func(s *Stream) { defer s.Close(); _ = s.Respond(200); <-hold })
	defer close(hold)
	p, dials := countingPool(t, cli, addr, time.Hour)
	a, b := poolKey{"sleep", "echo"}, poolKey{"sleep", "other"}

	// Concurrent first users of a key share one dial.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Open(context.Background(), a, "10.0.0.1:80", nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials for 20 streams of one key, want 1", n)
	}
	// Another key never shares a connection.
	if _, err := p.Open(context.Background(), b, "10.0.0.2:80", nil); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials after a second key, want 2", n)
	}
	// Past the server's stream limit, the key gets a second connection.
	for i := 20; i < MaxConcurrentStreams+5; i++ {
		if _, err := p.Open(context.Background(), a, "10.0.0.1:80", nil); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if n := dials.Load(); n != 3 || p.Len() != 3 {
		t.Fatalf("%d dials and %d connections after %d streams on one key, want 3 and 3", n, p.Len(), MaxConcurrentStreams+5)
	}
}

func TestPoolClosesIdleConnections(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, echo)
	p, dials := countingPool(t, cli, addr, 200*time.Millisecond)
	key := poolKey{"sleep", "echo"}
	s, err := p.Open(context.Background(), key, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(s, 1000); err != nil {
		t.Fatal(err)
	}
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for p.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection never closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The next tunnel dials afresh.
	if _, err := p.Open(context.Background(), key, "10.0.0.1:80", nil); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

func TestPoolAfterClose(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, echo)
	p, _ := countingPool(t, cli, addr, time.Hour)
	p.Close()
	if _, err := p.Open(context.Background(), poolKey{}, "10.0.0.1:80", nil); err != ErrPoolClosed {
		t.Fatalf("Open after Close: %v", err)
	}
}

// TestPoolMaxStreamsPerConn: a lower cap than the server's spreads a key's
// tunnels over more connections, each carrying at most the cap.
func TestPoolMaxStreamsPerConn(t *testing.T) {
	cli, srv := tlsPair(t)
	hold := make(chan struct{})
	addr := listen(t, srv, func(s *Stream) { defer s.Close(); _ = s.Respond(200); <-hold })
	defer close(hold)
	p, dials := countingPool(t, cli, addr, time.Hour)
	p.MaxStreamsPerConn = 2
	key := poolKey{"sleep", "echo"}
	conns := map[net.Conn]int{}
	for i := 0; i < 5; i++ {
		s, err := p.Open(context.Background(), key, "10.0.0.1:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		conns[s.Conn()]++
	}
	if n := dials.Load(); n != 3 || len(conns) != 3 {
		t.Fatalf("5 streams at 2 per connection took %d dials over %d connections, want 3", n, len(conns))
	}
	for _, n := range conns {
		if n > 2 {
			t.Fatalf("a connection carries %d streams, over the cap of 2", n)
		}
	}
}
