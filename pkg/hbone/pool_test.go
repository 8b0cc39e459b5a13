package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
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

// holdingServer serves streams that are answered and then held open
// until the test ends, and returns its address.
func holdingServer(t *testing.T, srv *tls.Config) string {
	hold := make(chan struct{})
	addr := listen(t, srv, func(s *Stream) { defer s.Close(); _ = s.Respond(200); <-hold })
	t.Cleanup(func() { close(hold) })
	return addr
}

func TestPoolSharesConnectionsPerKey(t *testing.T) {
	cli, srv := tlsPair(t)
	p, dials := countingPool(t, cli, holdingServer(t, srv), time.Hour)
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
	p, dials := countingPool(t, cli, holdingServer(t, srv), time.Hour)
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

// TestPoolReopensRefusedStreams: a stream the peer refused unprocessed, as
// a draining ztunnel does to one that raced its GOAWAY, is opened again on
// a new connection instead of failing the client's connection.
func TestPoolReopensRefusedStreams(t *testing.T) {
	for _, how := range []string{"goaway", "refused_stream"} {
		t.Run(how, func(t *testing.T) {
			cli, srv := tlsPair(t)
			ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for i := 0; ; i++ {
					nc, err := ln.Accept()
					if err != nil {
						return
					}
					if i == 0 {
						go refuseStreams(nc, how)
						continue
					}
					go func() { defer nc.Close(); _ = Serve(ctx, nc, echo) }()
				}
			}()
			p, dials := countingPool(t, cli, ln.Addr().String(), time.Hour)
			octx, ocancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ocancel()
			s, err := p.Open(octx, poolKey{"a", "b"}, "10.0.0.1:80", nil)
			if err != nil {
				t.Fatalf("open after the peer refused the stream: %v", err)
			}
			defer s.Close()
			if _, err := s.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			var b [1]byte
			if _, err := io.ReadFull(s, b[:]); err != nil || b[0] != 'x' {
				t.Fatalf("echo through the second connection: %q, %v", b[:], err)
			}
			if n := dials.Load(); n != 2 {
				t.Fatalf("%d dials, want 2: the refusing connection, then a new one", n)
			}
		})
	}
}

// refuseStreams speaks HTTP/2 as a server that refuses every stream:
// with GOAWAY naming no stream processed, as a draining server does, or
// with RST_STREAM REFUSED_STREAM.
func refuseStreams(nc net.Conn, how string) {
	defer nc.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil {
		return
	}
	fr := http2.NewFramer(nc, nc)
	if err := fr.WriteSettings(); err != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if how == "goaway" {
				_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			} else {
				_ = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			}
		}
	}
}

// breakableConn fails every write once broken, while its reads go on: a
// connection whose peer just went away, before our reader has seen it go.
type breakableConn struct {
	net.Conn
	broken *atomic.Bool
}

func (b breakableConn) Write(p []byte) (int, error) {
	if b.broken.Load() {
		return 0, net.ErrClosed
	}
	return b.Conn.Write(p)
}

// TestPoolReopensStreamsOfAConnectionThatJustEnded: a stream whose
// HEADERS could not be written never reached the peer, so the pool opens
// it on another connection instead of failing the tunnel. (A ztunnel
// upgrade on the peer's node ends connections this way.)
func TestPoolReopensStreamsOfAConnectionThatJustEnded(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, echo)
	var broken atomic.Bool
	var dials atomic.Int32
	p := &Pool[poolKey]{
		IdleTimeout: time.Hour,
		Dial: func(ctx context.Context, _ poolKey) (net.Conn, error) {
			d := tls.Dialer{Config: cli}
			nc, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			if dials.Add(1) == 1 {
				return breakableConn{nc, &broken}, nil
			}
			return nc, nil
		},
	}
	t.Cleanup(p.Close)
	key := poolKey{"a", "b"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.Open(ctx, key, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(s, 1<<10); err != nil {
		t.Fatal(err)
	}
	s.Close()

	broken.Store(true)
	s, err = p.Open(ctx, key, "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("open while the pooled connection just ended: %v", err)
	}
	defer s.Close()
	if err := roundTrip(s, 1<<10); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2: the ended connection, then a new one", n)
	}
}
