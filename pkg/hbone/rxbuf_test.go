package hbone

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestRxBuf follows bytes through a receive buffer across chunk
// boundaries: what is read is what was pushed, in order, and chunks go
// back as soon as nothing uses them.
func TestRxBuf(t *testing.T) {
	var b rxBuf
	want := make([]byte, 3*rxChunkSize+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	// Push in pieces that straddle chunks: a frame read into reserved
	// room, then small ones copied in.
	room := b.reserve(rxChunkSize+100, nil)
	if len(room) != 2 {
		t.Fatalf("room over %d slices, want 2 (it spans two chunks)", len(room))
	}
	off := 0
	for _, d := range room {
		off += copy(d, want[off:])
	}
	if b.n != 0 {
		t.Fatalf("%d bytes readable before commit", b.n)
	}
	b.commit(off)
	for off < len(want) {
		k := min(5000, len(want)-off)
		b.push(want[off : off+k])
		off += k
	}
	if b.held() != 4*rxChunkSize {
		t.Fatalf("holds %d chunks, want 4", b.held()/rxChunkSize)
	}
	var views int
	for _, v := range b.views(nil) {
		views += len(v)
	}
	if views != len(want) {
		t.Fatalf("views cover %d bytes, want %d", views, len(want))
	}

	// Read in odd sizes: chunks wholly read go back at once.
	var got bytes.Buffer
	p := make([]byte, 40000)
	for b.n > 0 {
		k := b.read(p)
		got.Write(p[:k])
		if max := (b.head + b.n + rxChunkSize - 1) / rxChunkSize; len(b.chunks) > max {
			t.Fatalf("holds %d chunks for %d bytes from offset %d", len(b.chunks), b.n, b.head)
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatal("bytes read differ from bytes pushed")
	}
	if b.held() != 0 {
		t.Fatalf("an empty buffer holds %d bytes", b.held())
	}

	// Room abandoned (a reset stream) is given back, past what is kept.
	b.push([]byte("kept"))
	b.reserve(2*rxChunkSize, nil)
	b.abandon(2 * rxChunkSize)
	if b.held() != rxChunkSize || b.n != 4 {
		t.Fatalf("after abandoning room: %d chunks, %d bytes; want 1 chunk with the 4 kept", len(b.chunks), b.n)
	}
	b.read(p)
	if b.held() != 0 {
		t.Fatalf("drained buffer holds %d bytes", b.held())
	}
}

// TestReadBesideWriteTo: a stream read by Read and WriteTo at once, which
// a caller should not do, still delivers each byte once, to one of them,
// each in order; neither consumes (and frees) what the other is writing.
func TestReadBesideWriteTo(t *testing.T) {
	cli, srv := tlsPair(t)
	const total = 8 << 20
	type part struct {
		data []byte
		who  string
	}
	var mu sync.Mutex
	var got []part
	record := func(who string, p []byte) {
		mu.Lock()
		got = append(got, part{append([]byte(nil), p...), who})
		mu.Unlock()
	}
	done := make(chan struct{})
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = s.WriteTo(writerFunc(func(p []byte) (int, error) { record("WriteTo", p); return len(p), nil }))
		}()
		go func() {
			defer wg.Done()
			p := make([]byte, 3000)
			for {
				n, err := s.Read(p)
				record("Read", p[:n])
				if err != nil {
					return
				}
			}
		}()
		wg.Wait()
		close(done)
	})
	cc := dial(t, cli, addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := make([]byte, total)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(want)
	// Sent from its own goroutine: consumers that lost track would stop
	// granting credit, and the deadline below must cover the send too.
	sent := make(chan error, 1)
	go func() {
		_, err := s.ReadFrom(bytes.NewReader(want))
		_ = s.CloseWrite()
		sent <- err
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the consumers did not finish: bytes lost or double-counted")
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// Each consumer's pieces in the order it took them; together they
	// must tile the stream, each piece at the offset where the other's
	// left off (a record may land after the other's next one).
	queues := map[string][][]byte{}
	for _, p := range got {
		if len(p.data) > 0 {
			queues[p.who] = append(queues[p.who], p.data)
		}
	}
	t.Logf("pieces taken: Read %d, WriteTo %d", len(queues["Read"]), len(queues["WriteTo"]))
	off := 0
	for off < total {
		took := false
		for who, q := range queues {
			if len(q) > 0 && bytes.Equal(q[0], want[off:min(total, off+len(q[0]))]) {
				off += len(q[0])
				queues[who] = q[1:]
				took = true
				break
			}
		}
		if !took {
			t.Fatalf("at offset %d no consumer holds the next bytes: bytes lost, doubled or corrupted", off)
		}
	}
	for who, q := range queues {
		if len(q) > 0 {
			t.Fatalf("%s took %d pieces past the stream's end", who, len(q))
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ io.Writer = writerFunc(nil)
