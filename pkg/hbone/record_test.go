package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// exchange writes size random bytes each way between a and b at once and
// checks both arrive intact.
func exchange(t *testing.T, a, b net.Conn, size int) {
	t.Helper()
	ab := make([]byte, size)
	ba := make([]byte, size)
	rand.Read(ab)
	rand.Read(ba)
	errc := make(chan error, 4)
	send := func(c net.Conn, p []byte) {
		_, err := c.Write(p)
		errc <- err
	}
	recv := func(c net.Conn, want []byte) {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			errc <- err
			return
		}
		if !bytes.Equal(got, want) {
			errc <- errors.New("bytes differ")
			return
		}
		errc <- nil
	}
	go send(a, ab)
	go send(b, ba)
	go recv(b, ab)
	go recv(a, ba)
	for range 4 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("exchange timed out")
		}
	}
}

// goTLSServer runs crypto/tls's server on one end, returning the
// connection once its handshake is done.
func goTLSServer(t *testing.T, raw net.Conn, cfg *tls.Config) <-chan *tls.Conn {
	ch := make(chan *tls.Conn, 1)
	go func() {
		tc := tls.Server(raw, cfg)
		if err := tc.Handshake(); err != nil {
			t.Error(err)
			ch <- nil
			return
		}
		ch <- tc
	}()
	return ch
}

// Our client against crypto/tls's server, which (with no client
// certificate asked for) sends a session ticket right behind its Finished:
// the ticket must be read and ignored, and records must match both ways.
func TestTLSClientInteropWithCryptoTLS(t *testing.T) {
	cli, srv := tlsPair(t)
	for _, tc := range []struct {
		name       string
		clientAuth bool
		suite      uint16
	}{
		{"mutual TLS", true, 0},
		{"server auth only, ticket in the first flight", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := srv.Clone()
			if !tc.clientAuth {
				s.ClientAuth = tls.NoClientCert
			}
			a, b := tcpPair(t)
			peerc := goTLSServer(t, b, s)
			c, err := TLSClient(context.Background(), a, cli)
			if err != nil {
				t.Fatal(err)
			}
			peer := <-peerc
			if peer == nil {
				t.FailNow()
			}
			if got := c.ConnectionState().NegotiatedProtocol; got != "h2" {
				t.Fatalf("ALPN %q", got)
			}
			if tc.clientAuth != (len(peer.ConnectionState().PeerCertificates) > 0) {
				t.Fatal("client certificate not as configured")
			}
			exchange(t, c, peer, 3<<20+17)
			exchange(t, c, peer, 1)
		})
	}
}

// crypto/tls's client against our server.
func TestTLSServerInteropWithCryptoTLS(t *testing.T) {
	cli, srv := tlsPair(t)
	a, b := tcpPair(t)
	done := make(chan *TLSConn, 1)
	go func() {
		c, err := TLSServer(context.Background(), b, srv)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	peer := tls.Client(a, cli)
	if err := peer.Handshake(); err != nil {
		t.Fatal(err)
	}
	c := <-done
	if c == nil {
		t.FailNow()
	}
	if len(c.ConnectionState().PeerCertificates) == 0 {
		t.Fatal("no client certificate in the server's state")
	}
	exchange(t, peer, c, 3<<20+17)
}

// ourPair returns a connected TLSClient and TLSServer.
func ourPair(t *testing.T) (client, server *TLSConn) {
	t.Helper()
	cli, srv := tlsPair(t)
	a, b := tcpPair(t)
	done := make(chan *TLSConn, 1)
	go func() {
		c, err := TLSServer(context.Background(), b, srv)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	client, err := TLSClient(context.Background(), a, cli)
	if err != nil {
		t.Fatal(err)
	}
	server = <-done
	if server == nil {
		t.FailNow()
	}
	return client, server
}

// A key update we ask for is applied by crypto/tls, which answers with its
// own: both directions move to new keys and carry on.
func TestKeyUpdateWithCryptoTLS(t *testing.T) {
	cli, srv := tlsPair(t)
	a, b := tcpPair(t)
	peerc := goTLSServer(t, b, srv)
	c, err := TLSClient(context.Background(), a, cli)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-peerc
	if peer == nil {
		t.FailNow()
	}
	exchange(t, c, peer, 100<<10)
	c.rmu.Lock()
	before := c.in.secret
	c.rmu.Unlock()
	if err := c.writeKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	// The peer reads our KeyUpdate before "x" and answers with its own
	// before "y".
	xyExchange(t, c, peer)
	exchange(t, c, peer, 100<<10)
	c.rmu.Lock()
	after := c.in.secret
	c.rmu.Unlock()
	if bytes.Equal(before, after) {
		t.Fatal("the peer did not answer with a key update of its own")
	}
}

// Our side moves to a new key by itself after keyUpdateAfter records,
// and the other side follows.
func TestKeyUpdateByRecordCount(t *testing.T) {
	old := keyUpdateAfter
	keyUpdateAfter = 3
	t.Cleanup(func() { keyUpdateAfter = old })
	c, s := ourPair(t)
	exchange(t, c, s, 1<<20)
	c.wmu.Lock()
	seq := c.out.seq
	c.wmu.Unlock()
	if seq > 3 {
		t.Fatalf("write sequence %d, want at most 3", seq)
	}
}

// close_notify ends the peer's reads with io.EOF; a connection cut
// without it does not look like a clean end.
func TestTLSConnEnd(t *testing.T) {
	c, s := ourPair(t)
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "last" {
		t.Fatalf("got %q, %v; want \"last\" and a clean end", got, err)
	}

	c, s = ourPair(t)
	c.raw.Close()
	if _, err := io.ReadAll(s); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut connection: %v, want unexpected EOF", err)
	}
}

// A record altered on the wire fails the connection.
func TestTamperedRecord(t *testing.T) {
	cli, srv := tlsPair(t)
	a, b := tcpPair(t)
	peerc := goTLSServer(t, b, srv)
	c, err := TLSClient(context.Background(), a, cli)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-peerc
	if peer == nil {
		t.FailNow()
	}
	// Write a record through crypto/tls into a buffer, flip a bit, and
	// send that on the raw socket.
	var rec bytes.Buffer
	_ = peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = peer.Write([]byte("hello")) }()
	buf := make([]byte, 64)
	n, err := c.raw.(*net.TCPConn).Read(buf) // steal the record from under c
	if err != nil {
		t.Fatal(err)
	}
	rec.Write(buf[:n])
	altered := rec.Bytes()
	altered[len(altered)-1] ^= 1
	if c.rbuf == nil {
		c.rbuf = recordReadBufs.Get().(*[]byte)
	}
	c.roff, c.rend = 0, copy(*c.rbuf, altered)
	if _, err := c.Read(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("tampered record read: %v", err)
	}
}

// With AES hardware, crypto/tls's client prefers AES-GCM; without it,
// ChaCha20-Poly1305. The test runs itself again with the CPU's AES
// switched off for Go, so that both suites are checked against
// crypto/tls, key updates included.
func TestCipherSuitesWithCryptoTLS(t *testing.T) {
	want := uint16(tls.TLS_AES_128_GCM_SHA256)
	if os.Getenv("HBONE_TEST_NO_AES") == "1" {
		want = tls.TLS_CHACHA20_POLY1305_SHA256
	} else {
		t.Run("ChaCha20-Poly1305", func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestCipherSuitesWithCryptoTLS$", "-test.v")
			cmd.Env = append(os.Environ(), "HBONE_TEST_NO_AES=1", "GODEBUG=cpu.aes=off")
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: TestCipherSuitesWithCryptoTLS")) {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
	cli, srv := tlsPair(t)
	a, b := tcpPair(t)
	peerc := goTLSServer(t, b, srv)
	c, err := TLSClient(context.Background(), a, cli)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-peerc
	if peer == nil {
		t.FailNow()
	}
	if got := c.ConnectionState().CipherSuite; got != want {
		t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(want))
	}
	exchange(t, c, peer, 1<<20)
	before := c.in.secret
	if err := c.writeKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	xyExchange(t, c, peer)
	exchange(t, c, peer, 1<<20)
	if bytes.Equal(before, c.in.secret) {
		t.Fatal("the peer did not answer with a key update of its own")
	}
}

// xyExchange sends "x" from a to b and "y" back.
func xyExchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	buf := make([]byte, 1)
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("got %q, %v", buf, err)
	}
	if _, err := b.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a, buf); err != nil || buf[0] != 'y' {
		t.Fatalf("got %q, %v", buf, err)
	}
}
