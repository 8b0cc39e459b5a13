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

// TestTransportWritesAFrameAtOnce checks what Transport is for: the 17 TLS
// records of a 256 KiB DATA frame reach the socket in one write, where TLS
// alone makes a system call per record. (A control frame the connection
// sends meanwhile may take a write of its own here: over TCP the queue
// goes out with one writev, which this counting wrapper cannot offer.)
func TestTransportWritesAFrameAtOnce(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, sink)
	for _, tc := range []struct {
		name      string
		transport bool
	}{
		{"transport", true},
		{"plain TLS", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			counted := &countingConn{Conn: raw}
			var under net.Conn = counted
			if tc.transport {
				under = Transport(counted)
			}
			nc := tls.Client(under, cli)
			if err := nc.Handshake(); err != nil {
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
			if tc.transport && (largest < int64(len(buf)) || writes > 2) {
				t.Errorf("the frame took %d writes, the largest %d bytes; want it in one", writes, largest)
			}
			if !tc.transport && writes < 16 {
				t.Errorf("plain TLS took %d writes; the comparison assumes one per record", writes)
			}
		})
	}
}

// TestTransportCloseWritesWhatIsGathered: bytes gathered while another
// writer holds the transport still reach the peer when the connection is
// closed before that writer lets go.
func TestTransportCloseWritesWhatIsGathered(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	tr := Transport(a).(*transport)
	tr.hold()
	if _, err := tr.Write([]byte("last frame")); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		buf, _ := io.ReadAll(b)
		got <- string(buf)
	}()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "last frame" {
		t.Fatalf("peer read %q, want the gathered bytes", s)
	}
	if _, err := tr.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
}
