package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// relay starts Copy from one connection to another and returns the far
// ends: what is written to in comes out of out. Copy's outcome arrives on
// the channel.
func relay(t *testing.T) (in, out *net.TCPConn, result <-chan copyResult) {
	t.Helper()
	in, src := tcpConns(t)
	dst, out := tcpConns(t)
	ch := make(chan copyResult, 1)
	go func() {
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

// Requests and responses, then a bulk transfer (spliced, in part), then
// small messages again: every byte arrives, in order, and Copy ends
// cleanly at the end of its source.
func TestCopySmallBulkSmall(t *testing.T) {
	in, out, result := relay(t)
	buf := make([]byte, 64)
	small := func(msg string) {
		t.Helper()
		if _, err := in.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(out, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
			t.Fatalf("relayed %q, %v; want %q", buf[:len(msg)], err, msg)
		}
	}
	small("GET / HTTP/1.1")
	small("200 OK")
	bulk := make([]byte, spliceBurst+3*copyBufLen+123)
	for i := range bulk {
		bulk[i] = byte(i % 251)
	}
	go func() { _, _ = in.Write(bulk) }()
	got := make([]byte, len(bulk))
	if _, err := io.ReadFull(out, got); err != nil || !bytes.Equal(got, bulk) {
		t.Fatalf("bulk transfer relayed wrongly (%v)", err)
	}
	small("after the bulk")
	small("and again")
	_ = in.CloseWrite()
	if rest, err := io.ReadAll(out); err != nil || len(rest) != 0 {
		t.Fatalf("after the end: %d more bytes, %v; want the end", len(rest), err)
	}
	r := <-result
	want := int64(len("GET / HTTP/1.1") + len("200 OK") + len(bulk) + len("after the bulk") + len("and again"))
	if r.err != nil || r.n != want {
		t.Fatalf("Copy = %d, %v; want %d, nil", r.n, r.err, want)
	}
}

// A destination that resets ends Copy with the write's error.
func TestCopyReportsWriteError(t *testing.T) {
	in, src := tcpConns(t)
	dst, out := tcpConns(t)
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
