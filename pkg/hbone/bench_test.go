package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
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
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTLSThroughput(b *testing.B) {
	c := tlsConn(b, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
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
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
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
