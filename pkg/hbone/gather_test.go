package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// countingConn counts the writes that reach the socket, and the largest.
type countingConn struct {
	net.Conn
	writes, bytes, largest atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	for {
		l := c.largest.Load()
		if int64(len(p)) <= l || c.largest.CompareAndSwap(l, int64(len(p))) {
			break
		}
	}
	return c.Conn.Write(p)
}

// TestFrameLeavesInOneWrite checks what TLSConn's gathering is for: the
// 17 TLS records of a 256 KiB DATA frame reach the socket in one write,
// where crypto/tls makes a system call per record. (A control frame the
// connection sends meanwhile may take a write of its own.)
func TestFrameLeavesInOneWrite(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, sink)
	for _, tc := range []struct {
		name   string
		ourTLS bool
	}{
		{"TLSConn", true},
		{"crypto/tls", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			counted := &countingConn{Conn: raw}
			var nc net.Conn
			if tc.ourTLS {
				nc, err = TLSClient(context.Background(), counted, cli)
			} else {
				gc := tls.Client(counted, cli)
				err = gc.Handshake()
				nc = gc
			}
			if err != nil {
				t.Fatal(err)
			}
			cc, err := NewClientConn(context.Background(), nc)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// Let the SETTINGS acknowledgement go out first.
			if err := cc.c.write(func() error { return nil }); err != nil {
				t.Fatal(err)
			}
			w0, b0 := counted.writes.Load(), counted.bytes.Load()
			buf := make([]byte, maxWriteFrame)
			if _, err := s.Write(buf); err != nil {
				t.Fatal(err)
			}
			writes, n, largest := counted.writes.Load()-w0, counted.bytes.Load()-b0, counted.largest.Load()
			t.Logf("%d bytes of frame in %d writes of %d bytes, the largest %d", len(buf), writes, n, largest)
			if n < int64(len(buf)) {
				t.Fatalf("only %d bytes reached the socket, want at least %d", n, len(buf))
			}
			if tc.ourTLS && (largest < int64(len(buf)) || writes > 2) {
				t.Errorf("the frame took %d writes, the largest %d bytes; want it in one", writes, largest)
			}
			if !tc.ourTLS && writes < 16 {
				t.Errorf("crypto/tls took %d writes; the comparison assumes one per record", writes)
			}
		})
	}
}

// TestCloseWritesWhatIsGathered: records gathered while another writer
// holds the connection still reach the peer, followed by close_notify,
// when the connection is closed before that writer lets go.
func TestCloseWritesWhatIsGathered(t *testing.T) {
	c, s := ourPair(t)
	c.hold()
	if _, err := c.Write([]byte("last frame")); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		buf, err := io.ReadAll(s)
		if err != nil {
			buf = append(buf, " (then "+err.Error()+")"...)
		}
		got <- string(buf)
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "last frame" {
		t.Fatalf("peer read %q, want the gathered bytes and a clean end", s)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
}
