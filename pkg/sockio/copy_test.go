package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/internal/tcptest"
)

// relay starts Copy from one connection to another and returns the far
// ends: what is written to in comes out of out. Copy's outcome arrives on
// the channel.
func relay(t *testing.T) (in, out *net.TCPConn, result <-chan copyResult) {
	t.Helper()
	// Registered first, so run last: once the connections are closed,
	// the relay has ended before the test's hooks are reset.
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	in, src := tcptest.Pair(t)
	dst, out := tcptest.Pair(t)
	ch := make(chan copyResult, 1)
	go func() {
		defer close(done)
		n, err := Copy(dst, src)
		_ = dst.CloseWrite()
		ch <- copyResult{n, err}
	}()
	return in, out, ch
}

type copyResult struct {
	n   int64
	err error
}

// Requests and responses, then a bulk transfer, then a message of exactly
// one buffer and small messages again: every byte arrives, in order; the
// bulk is spliced in part, the rest never is, and Copy ends cleanly at the
// end of its source.
func TestCopySplicesBulkOnly(t *testing.T) {
	var spliced atomic.Int64
	testHookSplice = func(n int64) { spliced.Add(n) }
	t.Cleanup(func() { testHookSplice = nil })
	in, out, result := relay(t)
	var sent int64
	exchange := func(msg []byte) {
		t.Helper()
		go func() { _, _ = in.Write(msg) }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(out, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("relayed %d bytes wrongly (%v)", len(msg), err)
		}
		sent += int64(len(msg))
	}
	small := func(phase string) {
		t.Helper()
		before := spliced.Load()
		for _, m := range []string{"GET / HTTP/1.1", "200 OK", "GET /next HTTP/1.1", "404"} {
			exchange([]byte(m))
		}
		if n := spliced.Load() - before; n != 0 {
			t.Fatalf("%s: %d bytes of small messages were spliced; want none", phase, n)
		}
	}
	small("before the bulk")
	exchange(pattern(8 << 20))
	if spliced.Load() == 0 {
		t.Fatal("none of an 8 MiB transfer was spliced")
	}
	t.Logf("spliced %d of %d bulk bytes", spliced.Load(), 8<<20)
	afterBulk := spliced.Load()
	exchange(pattern(copyBufLen))
	small("after the bulk and a message of one buffer")
	_ = in.CloseWrite()
	if rest, err := io.ReadAll(out); err != nil || len(rest) != 0 {
		t.Fatalf("after the end: %d more bytes, %v; want the end", len(rest), err)
	}
	r := <-result
	if r.err != nil || r.n != sent {
		t.Fatalf("Copy = %d, %v; want %d, nil", r.n, r.err, sent)
	}
	if n := spliced.Load() - afterBulk; n != 0 {
		t.Fatalf("%d bytes after the bulk were spliced; want none", n)
	}
}

// A relay waiting for its peer holds no buffer, after small messages as
// after bulk.
func TestCopyIdleHoldsNoBuffer(t *testing.T) {
	var held atomic.Int64
	testHookPooled = func(d int) { held.Add(int64(d)) }
	t.Cleanup(func() { testHookPooled = nil })
	in, dst, _ := relay(t)
	for _, msg := range [][]byte{[]byte("ping"), pattern(4 << 20), []byte("pong")} {
		go func() { _, _ = in.Write(msg) }()
		if _, err := io.ReadFull(dst, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
		// Copy puts its buffer back right after its write, which the
		// read above may beat.
		deadline := time.Now().Add(5 * time.Second)
		for held.Load() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("after relaying %d bytes, the idle relay holds %d buffers; want none", len(msg), held.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A destination that resets ends Copy with the write's error.
func TestCopyReportsWriteError(t *testing.T) {
	in, src := tcptest.Pair(t)
	dst, out := tcptest.Pair(t)
	_ = out.SetLinger(0)
	out.Close() // RST
	done := make(chan error, 1)
	go func() {
		_, err := Copy(dst, src)
		done <- err
	}()
	// Send until Copy's write meets the reset, which the first one
	// should; a byte at a time, for at most 5 s.
	for range 500 {
		if _, err := in.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Copy to a reset connection = %v; want EPIPE or ECONNRESET", err)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("Copy to a reset connection did not end")
}

// Other readers and writers are io.Copy's.
func TestCopyOtherConns(t *testing.T) {
	var dst bytes.Buffer
	n, err := Copy(&dst, bytes.NewReader([]byte("plain")))
	if err != nil || n != 5 || dst.String() != "plain" {
		t.Fatalf("Copy = %d, %v, %q", n, err, dst.String())
	}
}

// Relaying a request costs no allocation.
func TestCopyAllocatesNothingPerMessage(t *testing.T) {
	if !rawSyscalls {
		t.Skip("under the race detector sync.Pool drops buffers at random, so they are allocated again")
	}
	in, out, _ := relay(t)
	msg := []byte("request")
	buf := make([]byte, len(msg))
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := in.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(out, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per relayed message; want none", allocs)
	}
}
