package hbone

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// freezer relays TCP between a client and addr until frozen; frozen, it
// carries nothing either way and closes nothing, as a network split or a
// vanished node looks to the client.
type freezer struct {
	addr   string
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
	rate   int // bytes per second each way, if not 0: a slow link
}

func newFreezer(t *testing.T, upstream string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: ln.Addr().String(), thaw: make(chan struct{})}
	var wg sync.WaitGroup
	var conns []net.Conn
	var cmu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		f.setFrozen(false)
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			cmu.Lock()
			conns = append(conns, down, up)
			cmu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); f.pipe(up, down) }()
			go func() { defer wg.Done(); f.pipe(down, up) }()
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		f.mu.Lock()
		rate := f.rate
		f.mu.Unlock()
		chunk := buf
		if rate > 0 {
			chunk = buf[:min(len(buf), max(rate/50, 1))]
		}
		n, err := src.Read(chunk)
		f.mu.Lock()
		thaw := f.thaw
		frozen := f.frozen
		f.mu.Unlock()
		if frozen {
			<-thaw // the bytes read are held, not lost
		}
		if rate > 0 && n > 0 {
			time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok && err == io.EOF {
				_ = tc.CloseWrite()
				continue
			}
			return
		}
	}
}

func (f *freezer) setFrozen(frozen bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen && !frozen {
		close(f.thaw)
		f.thaw = make(chan struct{})
	}
	f.frozen = frozen
}

func (f *freezer) setRate(bytesPerSecond int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = bytesPerSecond
}

// quickHealth shortens the health check's times for a test.
func quickHealth(t *testing.T, probe, ping, idle time.Duration) {
	old := defaultHealth
	defaultHealth = healthTimes{probeAfter: probe, pingTimeout: ping, keepaliveIdle: idle}
	t.Cleanup(func() { defaultHealth = old })
}

// TestConnectionToVanishedPeerEnds: once the peer stops sending anything,
// a CONNECT left unanswered gets the connection checked, and the client
// ends it (so the pool dials anew) instead of waiting out each tunnel's
// own deadline on it.
func TestConnectionToVanishedPeerEnds(t *testing.T) {
	quickHealth(t, 100*time.Millisecond, 500*time.Millisecond, time.Hour)
	cli, srv := tlsPair(t)
	f := newFreezer(t, listen(t, srv, echo))
	cc := dial(t, cli, f.addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(s, 1<<10); err != nil {
		t.Fatal(err)
	}

	f.setFrozen(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = cc.Open(ctx, "10.0.0.1:80", nil)
	took := time.Since(start)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "PING") {
		t.Fatalf("open on a connection to a vanished peer: %v after %s; want the health check's error well before the 20s deadline", err, took.Round(time.Millisecond))
	}
	select {
	case <-cc.Done():
	default:
		t.Fatal("the open failed but the connection is still up")
	}
	if cc.Usable() {
		t.Fatal("a dead connection reports room for streams")
	}
	t.Logf("open failed after %s: %v", took.Round(time.Millisecond), err)
}

// TestIdleConnectionToVanishedPeerEnds: an idle pooled connection is
// checked too, with no tunnel asking.
func TestIdleConnectionToVanishedPeerEnds(t *testing.T) {
	quickHealth(t, time.Hour, 300*time.Millisecond, 200*time.Millisecond)
	cli, srv := tlsPair(t)
	f := newFreezer(t, listen(t, srv, echo))
	cc := dial(t, cli, f.addr)
	// Alive and idle: the checks pass for several rounds.
	select {
	case <-cc.Done():
		t.Fatal("an idle connection to a live peer was ended")
	case <-time.After(time.Second):
	}
	f.setFrozen(true)
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("an idle connection to a vanished peer is still up after 10s")
	}
}

// TestSlowAnswerKeepsConnection: a peer that is slow to answer a CONNECT
// (its app is slow to accept) but alive keeps its connection: the check
// gets its ack, and the tunnel opens.
func TestSlowAnswerKeepsConnection(t *testing.T) {
	quickHealth(t, 50*time.Millisecond, 200*time.Millisecond, time.Hour)
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) {
		time.Sleep(time.Second)
		echo(s)
	})
	cc := dial(t, cli, addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatalf("slow but live peer: %v", err)
	}
	if err := roundTrip(s, 64<<10); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cc.Done():
		t.Fatal("the connection to a slow but live peer was ended")
	default:
	}
}

// TestSlowLinkKeepsConnection: over a link so slow that one 256 KiB DATA
// frame takes longer to arrive than the check waits for its PING's ack,
// bytes still arrive, so the peer is alive and keeps its connection.
func TestSlowLinkKeepsConnection(t *testing.T) {
	quickHealth(t, time.Hour, time.Second, 200*time.Millisecond)
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		buf := make([]byte, maxWriteFrame)
		for {
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	})
	f := newFreezer(t, addr)
	cc := dial(t, cli, f.addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const rate = 100 << 10 // a 256 KiB frame takes 2.5 s, the check waits 1 s
	f.setRate(rate)
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, s)
		got <- n
	}()
	select {
	case <-cc.Done():
		t.Fatalf("a connection receiving %d KiB/s was ended as dead: %v", rate>>10, cc.c.errOr(nil))
	case <-time.After(4 * time.Second):
	}
	f.setRate(0)
	s.Close()
	if n := <-got; n == 0 {
		t.Fatal("no byte arrived over the slow link")
	}
}

// TestEndedUnreadStreamsCountAgainstTheLimit: a stream that ended both
// ways but whose bytes nobody has read still holds its buffer, so it
// still counts against the connection's stream limit (which, with the
// stream window, bounds what a connection buffers); read to the end, it
// leaves room for another.
func TestEndedUnreadStreamsCountAgainstTheLimit(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		_, _ = s.Write(make([]byte, 64<<10))
		_ = s.CloseWrite()
		_, _ = io.Copy(io.Discard, s)
	})
	cc := dial(t, cli, addr)
	var streams []*Stream
	for i := 0; i < MaxConcurrentStreams; i++ {
		s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		defer s.Close()
		if err := s.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	ended := func() (n int) {
		cc.c.mu.Lock()
		defer cc.c.mu.Unlock()
		for _, s := range streams {
			if s.recvEOF && s.sentEnd {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(20 * time.Second); ended() < len(streams); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d streams ended both ways", ended(), len(streams))
		}
	}
	if cc.Usable() {
		t.Fatalf("%d ended streams hold %d KiB unread, yet the connection takes more", len(streams), len(streams)*64)
	}
	if _, err := io.Copy(io.Discard, streams[0]); err != nil {
		t.Fatal(err)
	}
	if !cc.Usable() {
		t.Fatal("a stream read to its end still counts against the limit")
	}
}
