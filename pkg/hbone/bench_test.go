package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// sink accepts streams and discards what they carry.
func sink(s *Stream) {
	defer s.Close()
	_ = s.Respond(200)
	_, _ = io.Copy(io.Discard, s)
}

const benchChunk = 256 << 10

// BenchmarkStreamThroughput sends bulk data through one HBONE stream over
// loopback TLS. Compare with BenchmarkTLSThroughput, the same bytes over the
// same TLS without HTTP/2, measured in the same run.
func BenchmarkStreamThroughput(b *testing.B) {
	cli, srv := tlsPair(b)
	addr := listen(b, srv, sink)
	cc := dial(b, cli, addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	parallelWrites(b, []io.Writer{s})
}

// BenchmarkStreamThroughput8 sends bulk data through 8 streams of one
// HBONE connection at once, as a pooled connection carries them, and
// reports the process's CPU seconds per GiB (both ends, user and system).
// Compare with BenchmarkTLSThroughput8: 8 TLS connections, measured in the
// same run.
func BenchmarkStreamThroughput8(b *testing.B) {
	cli, srv := tlsPair(b)
	addr := listen(b, srv, sink)
	cc := dial(b, cli, addr)
	var ws []io.Writer
	for range 8 {
		s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ws = append(ws, s)
	}
	parallelWrites(b, ws)
}

func BenchmarkTLSThroughput8(b *testing.B) {
	var ws []io.Writer
	for range 8 {
		ws = append(ws, tlsConn(b, drain))
	}
	parallelWrites(b, ws)
}

// drain reads a connection to its end into a 256 KiB buffer, as a
// forwarder of the TLS chain in netbench does (io.Copy to io.Discard would
// read into 8 KiB, which stays in the CPU's nearest cache and flatters the
// baseline).
func drain(c net.Conn) {
	buf := make([]byte, benchChunk)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// parallelWrites writes b.N chunks spread over the writers, each from its
// own goroutine, and reports the process's CPU seconds per GiB.
func parallelWrites(b *testing.B, ws []io.Writer) {
	b.SetBytes(benchChunk)
	next := make(chan struct{}, len(ws))
	errc := make(chan error, len(ws))
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for _, w := range ws {
		go func() {
			// Each writer its own buffer, as each proxied connection has.
			buf := make([]byte, benchChunk)
			for range next {
				if _, err := w.Write(buf); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	for range ws {
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	gib := float64(b.N) * benchChunk / (1 << 30)
	b.ReportMetric((cpuTime(b)-cpu0).Seconds()/gib, "cpu-s/GiB")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkTLSThroughput(b *testing.B) {
	parallelWrites(b, []io.Writer{tlsConn(b, drain)})
}

// BenchmarkStreamRoundTrip bounces one byte through an HBONE stream to an
// echo and back. Compare with BenchmarkTLSRoundTrip, measured in the same
// run.
func BenchmarkStreamRoundTrip(b *testing.B) {
	cli, srv := tlsPair(b)
	addr := listen(b, srv, echo)
	cc := dial(b, cli, addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pingPong(b, s)
}

func BenchmarkTLSRoundTrip(b *testing.B) {
	pingPong(b, tlsConn(b, func(c net.Conn) { _, _ = io.Copy(c, c) }))
}

// tlsConn connects over plain TLS (the baseline) to a loopback server
// that runs serve on each connection.
func tlsConn(b *testing.B, serve func(net.Conn)) net.Conn {
	cli, srv := tlsPair(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		b.Fatal(err)
	}
	acceptLoop(b, ln, serve)
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func pingPong(b *testing.B, rw io.ReadWriter) {
	buf := []byte{1}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := rw.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(rw, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayRoundTrip bounces one byte from a TCP client through two
// relays joined by an HBONE stream, as ztunnel's are (the first relays its
// accepted socket with ReadFrom and WriteTo, the second its dialled one),
// to a TCP echo and back. Compare with BenchmarkTLSRelayRoundTrip, two
// relays joined by a TLS connection per client, measured in the same run:
// the difference is what HBONE adds to a round trip, with the scheduling of
// one process the same for both.
func BenchmarkRelayRoundTrip(b *testing.B) {
	echoAddr := tcpEcho(b)
	cli, srv := tlsPair(b)
	addr := listen(b, srv, func(s *Stream) {
		defer s.Close()
		up, err := net.Dial("tcp", echoAddr)
		if err != nil {
			return
		}
		defer up.Close()
		_ = s.Respond(200)
		go func() { _, _ = s.ReadFrom(up) }()
		_, _ = s.WriteTo(up)
	})
	cc := dial(b, cli, addr)
	front := tcpRelay(b, func(down net.Conn) {
		s, err := cc.Open(context.Background(), echoAddr, nil)
		if err != nil {
			return
		}
		defer s.Close()
		go func() { _, _ = s.ReadFrom(down) }()
		_, _ = s.WriteTo(down)
	})
	pingPong(b, front)
}

func BenchmarkTLSRelayRoundTrip(b *testing.B) {
	echoAddr := tcpEcho(b)
	cli, srv := tlsPair(b)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		b.Fatal(err)
	}
	acceptLoop(b, ln, func(c net.Conn) {
		up, err := net.Dial("tcp", echoAddr)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(c, up) }()
		_, _ = io.Copy(up, c)
	})
	front := tcpRelay(b, func(down net.Conn) {
		up, err := tls.Dial("tcp", ln.Addr().String(), cli)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, down) }()
		_, _ = io.Copy(down, up)
	})
	pingPong(b, front)
}

// tcpEcho serves a loopback TCP echo and returns its address.
func tcpEcho(b *testing.B) string {
	return serveTCP(b, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// tcpRelay serves relay on loopback and returns a connection to it.
func tcpRelay(b *testing.B, relay func(net.Conn)) net.Conn {
	c, err := net.Dial("tcp", serveTCP(b, relay))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// serveTCP runs handle on each connection to a loopback listener and
// returns the listener's address.
func serveTCP(b *testing.B, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	acceptLoop(b, ln, handle)
	return ln.Addr().String()
}

// acceptLoop runs handle on each connection ln accepts, until the
// benchmark ends, and closes the connection after.
func acceptLoop(b *testing.B, ln net.Listener, handle func(net.Conn)) {
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
}
