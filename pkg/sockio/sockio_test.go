package sockio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/internal/tcptest"
)

// crampedSock returns a connection's sock for writing, with the
// connection and its peer, their kernel buffers shrunk so that a few
// hundred KiB fill them and writes must wait for room. (Far smaller
// buffers make loopback TCP crawl.)
func crampedSock(t *testing.T) (s *Sock, w, r *net.TCPConn) {
	t.Helper()
	w, r = tcptest.Pair(t)
	if err := w.SetWriteBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	if err := r.SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	return Of(w), w, r
}

// collect reads r to its end on a goroutine of its own and sends what it
// read.
func collect(r io.Reader) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, r)
		got <- buf.Bytes()
	}()
	return got
}

// pattern is n bytes no two offsets of which, 251 apart or less, agree.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func TestSockReadEndsAsNetConn(t *testing.T) {
	a, b := tcptest.Pair(t)
	s := Of(b)
	if s == nil {
		t.Fatal("no sock for a bare TCP connection")
	}
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v; want hello", buf[:n], err)
	}

	// A deadline ends a waiting read as net.Conn's would, and only that
	// read.
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v; want a deadline error", err)
	}
	_, err = s.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline = %v; want a net.Error that is a timeout", err)
	}
	wantOp(t, err, "read")
	_ = b.SetReadDeadline(time.Time{})
	if _, err := a.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("Read after the deadline was lifted = %q, %v", buf[:n], err)
	}

	// The peer's end is io.EOF, after the bytes before it.
	if _, err := a.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = a.CloseWrite()
	if err := s.WaitReadable(); err != nil {
		t.Fatalf("waitReadable with bytes pending = %v", err)
	}
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "bye" {
		t.Fatalf("Read = %q, %v; want bye", buf[:n], err)
	}
	if err := s.WaitReadable(); err != nil {
		t.Fatalf("waitReadable at the end = %v; want nil (the read reports the end)", err)
	}
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read at the end = %d, %v; want 0, io.EOF", n, err)
	}

	// Closed locally: net.ErrClosed, as a net.Conn says.
	b.Close()
	for _, p := range [][]byte{buf, nil} {
		_, err := s.Read(p)
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read of %d bytes after Close = %v; want net.ErrClosed", len(p), err)
		}
		wantOp(t, err, "read")
	}
	_, err = s.Write([]byte("x"))
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
	}
	wantOp(t, err, "write")
}

// wantOp fails unless err is a *net.OpError of op, as net.Conn's are.
func wantOp(t *testing.T, err error, op string) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op {
		t.Fatalf("error %q is not a *net.OpError of a %s, as net.Conn's would be", err, op)
	}
}

func TestSockReportsReset(t *testing.T) {
	a, b := tcptest.Pair(t)
	s := Of(b)
	_ = a.SetLinger(0)
	a.Close() // sends RST
	// The peek reports the reset if it has arrived; if it arrives later,
	// the peek wakes with nothing and the read reports it.
	err := s.WaitReadable()
	if err == nil {
		_, err = s.Read(make([]byte, 8))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("waiting for and reading a reset connection = %v; want ECONNRESET", err)
	}
	wantOp(t, err, "read")

	// Writing to it fails too, as a write error, and writes nothing more.
	for _, write := range map[string]func() error{
		"Write":        func() error { _, err := s.Write([]byte("x")); return err },
		"writeBuffers": func() error { _, err := s.WriteBuffers([][]byte{[]byte("x"), []byte("y")}); return err },
	} {
		err := write()
		if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("write to a reset connection = %v; want EPIPE or ECONNRESET", err)
		}
		wantOp(t, err, "write")
	}
}

// A socket put in blocking mode (os.File.Fd does that to the socket it
// shares) must not block the sock's calls: they keep their P, and a call
// blocked in the kernel would stall the whole runtime, a collection
// included. Reads and writes still wait through the poller, bounded by
// their deadlines.
//
// A stalled runtime fires no timer, so the calls run in a child process
// that is killed if it does not finish.
func TestSockNeverBlocksInTheKernel(t *testing.T) {
	if !rawSyscalls {
		t.Skip("under the race detector the calls go through the syscall package, which releases the P")
	}
	if os.Getenv("HBONE_TEST_BLOCKING_SOCKET") != "1" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestSockNeverBlocksInTheKernel$", "-test.v")
		cmd.Env = append(os.Environ(), "HBONE_TEST_BLOCKING_SOCKET=1")
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("a sock call blocked on a socket in blocking mode and stalled the runtime:\n%s", out)
		}
		if err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		return
	}
	s, a, _ := crampedSock(t)
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	done := make(chan error, 1)
	go func() {
		_ = a.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			done <- fmt.Errorf("Read with nothing to read = %v; want a deadline error", err)
			return
		}
		// The peer reads nothing: the buffers fill, then the deadline ends
		// the write.
		_ = a.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := s.Write(make([]byte, 8<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
			done <- fmt.Errorf("Write to a full socket = %v; want a deadline error", err)
			return
		}
		done <- nil
	}()
	// A collection needs every P: it completes only if no call holds one
	// in the kernel.
	runtime.GC()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a sock call blocked on a socket in blocking mode")
	}
}

func TestSockWriteWaitsForRoom(t *testing.T) {
	s, a, b := crampedSock(t)
	want := pattern(2 << 20)
	got := collect(b)
	n, err := s.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
	}
	_ = a.CloseWrite()
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("peer read %d bytes, not the %d written, or not in order", len(g), len(want))
	}
}

func TestSockWriteDeadline(t *testing.T) {
	s, a, _ := crampedSock(t)
	_ = a.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	// Nobody reads: the write fills the buffers, then times out.
	n, err := s.Write(make([]byte, 8<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past the deadline = %d, %v; want a deadline error", n, err)
	}
	if n <= 0 || n >= 8<<20 {
		t.Fatalf("Write past the deadline reported %d bytes; want what the buffers took", n)
	}
}

func TestSockWriteBuffers(t *testing.T) {
	s, a, b := crampedSock(t)
	// More buffers than one writev takes, of many sizes, some empty.
	all := pattern(1 << 20)
	var bufs [][]byte
	for off, i := 0, 0; off < len(all); i++ {
		k := min((i*7919)%600, len(all)-off)
		bufs = append(bufs, all[off:off+k])
		off += k
	}
	if len(bufs) <= maxIovecs {
		t.Fatalf("only %d buffers; the test needs more than %d", len(bufs), maxIovecs)
	}
	got := collect(b)
	n, err := s.WriteBuffers(bufs)
	if err != nil || n != int64(len(all)) {
		t.Fatalf("writeBuffers = %d, %v; want %d, nil", n, err, len(all))
	}
	_ = a.CloseWrite()
	if g := <-got; !bytes.Equal(g, all) {
		t.Fatalf("peer read %d bytes, not the %d written, or not in order", len(g), len(all))
	}
	for i, b := range bufs {
		if len(b) != 0 {
			t.Fatalf("buffer %d still holds %d bytes; writeBuffers consumes what it wrote", i, len(b))
		}
	}
}

func TestSockWriteNowNeverWaits(t *testing.T) {
	s, a, b := crampedSock(t)
	want := pattern(8 << 20)
	done := make(chan int, 1)
	go func() { done <- s.WriteNow(want) }()
	var n int
	select {
	case n = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writeNow waited for a peer that does not read")
	}
	if n <= 0 || n >= len(want) {
		t.Fatalf("writeNow took %d of %d bytes; want what the buffers hold", n, len(want))
	}
	_ = a.CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, want[:n]) {
		t.Fatalf("peer read %d bytes (%v); want the %d writeNow reported", len(got), err, n)
	}
}

func TestSockOfBareTCPOnly(t *testing.T) {
	a, _ := tcptest.Pair(t)
	type wrapped struct{ *net.TCPConn }
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	for name, x := range map[string]any{
		"a wrapper of a TCP connection": wrapped{a},
		"a pipe":                        p1,
		"a file":                        os.Stdout,
	} {
		if Of(x) != nil {
			t.Errorf("Of(%s) is not nil: it may buffer, count or block", name)
		}
	}
}

// The relay's socket I/O runs for every message of every tunnel: it must
// not allocate, or an idle proxy's heap grows with its traffic until the
// next collection (it did, by 2.5 MiB per ztunnel in netbench's request
// run, when each call built a closure).
func TestSockAllocatesNothing(t *testing.T) {
	a, b := tcptest.Pair(t)
	sa, sb := Of(a), Of(b)
	msg := []byte("ping")
	buf := make([]byte, 64)
	bufs := make([][]byte, 2)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := sa.Write(msg); err != nil {
			t.Fatal(err)
		}
		if err := sb.WaitReadable(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(sb, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		bufs[0], bufs[1] = msg[:2], msg[2:]
		if _, err := sb.WriteBuffers(bufs); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(sa, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if n := sa.WriteNow(msg); n != len(msg) {
			t.Fatalf("writeNow took %d", n)
		}
		if _, err := io.ReadFull(sb, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round of reads and writes; want none", allocs)
	}
}
