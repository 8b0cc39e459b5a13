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
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/internal/tcptest"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	c, s := tcptest.Pair(t)
	return c, s
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

// withCryptoTLS connects our client to crypto/tls's server with the
// given configurations and returns both ends, handshakes done.
func withCryptoTLS(t *testing.T, cli, srv *tls.Config) (*TLSConn, *tls.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	peerc := make(chan *tls.Conn, 1)
	go func() {
		tc := tls.Server(b, srv)
		if err := tc.Handshake(); err != nil {
			t.Error(err)
			peerc <- nil
			return
		}
		peerc <- tc
	}()
	c, err := TLSClient(context.Background(), a, cli)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-peerc
	if peer == nil {
		t.FailNow()
	}
	return c, peer
}

// Our client against crypto/tls's server, with and without a client
// certificate: records must match both ways.
func TestTLSClientInteropWithCryptoTLS(t *testing.T) {
	cli, srv := tlsPair(t)
	for _, tc := range []struct {
		name       string
		clientAuth bool
		suite      uint16
	}{
		{"mutual TLS", true, 0},
		{"server auth only", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := srv.Clone()
			if !tc.clientAuth {
				s.ClientAuth = tls.NoClientCert
			}
			c, peer := withCryptoTLS(t, cli, s)
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

// serveTLS runs our server's handshake on raw and hands over the result
// (nil if it failed, reported).
func serveTLS(t *testing.T, raw net.Conn, cfg *tls.Config) <-chan *TLSConn {
	done := make(chan *TLSConn, 1)
	go func() {
		c, err := TLSServer(context.Background(), raw, cfg)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	return done
}

// crypto/tls's client against our server.
func TestTLSServerInteropWithCryptoTLS(t *testing.T) {
	cli, srv := tlsPair(t)
	a, b := tcpPair(t)
	done := serveTLS(t, b, srv)
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
	done := serveTLS(t, b, srv)
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
	c, peer := withCryptoTLS(t, cli, srv)
	exchange(t, c, peer, 100<<10)
	askKeyUpdate(t, c, peer, 100<<10)
}

// askKeyUpdate has c ask peer for a key update, then checks that peer
// answers with its own and that size bytes each way still arrive.
func askKeyUpdate(t *testing.T, c *TLSConn, peer net.Conn, size int) {
	t.Helper()
	c.rmu.Lock()
	before := c.in.secret
	c.rmu.Unlock()
	if err := c.writeKeyUpdate(true); err != nil {
		t.Fatal(err)
	}
	// The peer reads our KeyUpdate before "x" and answers with its own
	// before "y".
	xyExchange(t, c, peer)
	exchange(t, c, peer, size)
	c.rmu.Lock()
	after := c.in.secret
	c.rmu.Unlock()
	if bytes.Equal(before, after) {
		t.Fatal("the peer did not answer with a key update of its own")
	}
}

// Our side moves to a new key by itself after keyUpdateAfter records,
// and the other side follows: our own and crypto/tls.
func TestKeyUpdateByRecordCount(t *testing.T) {
	old := keyUpdateAfter
	keyUpdateAfter = 3
	t.Cleanup(func() { keyUpdateAfter = old })
	check := func(t *testing.T, c *TLSConn, first []byte) {
		c.wmu.Lock()
		seq, secret := c.out.seq, c.out.secret
		c.wmu.Unlock()
		if seq > 3 || bytes.Equal(secret, first) {
			t.Fatalf("write sequence %d, key changed %v; want at most 3 records per key", seq, !bytes.Equal(secret, first))
		}
	}
	t.Run("ours", func(t *testing.T) {
		c, s := ourPair(t)
		first := c.out.secret
		exchange(t, c, s, 1<<20)
		check(t, c, first)
	})
	t.Run("crypto/tls", func(t *testing.T) {
		cli, srv := tlsPair(t)
		c, peer := withCryptoTLS(t, cli, srv)
		first := c.out.secret
		// 1 MiB is 64 records: about 20 key updates crypto/tls must apply.
		exchange(t, c, peer, 1<<20)
		check(t, c, first)
	})
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

// sealedBy returns records s would send, sealed but not sent.
func sealedBy(t *testing.T, s *TLSConn, typ byte, contents ...[]byte) []byte {
	t.Helper()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.holds++ // gather, do not write
	defer func() { s.holds-- }()
	for _, content := range contents {
		if err := s.sealLocked(typ, content, false); err != nil {
			t.Fatal(err)
		}
	}
	out := append([]byte(nil), *s.obuf...)
	*s.obuf = (*s.obuf)[:0]
	return out
}

// A record altered on the wire, in its header or its body, or replayed,
// fails the connection with nothing of it read, and Close tells the peer
// why with a fatal alert instead of close_notify.
func TestTamperedRecord(t *testing.T) {
	for _, tc := range []struct {
		name  string
		alter func(recs []byte) []byte
	}{
		{"tag", func(r []byte) []byte { r[len(r)-1] ^= 1; return r }},
		{"ciphertext", func(r []byte) []byte { r[recordHeaderLen] ^= 0x80; return r }},
		{"header", func(r []byte) []byte { r[1] ^= 1; return r }}, // legacy version, authenticated as AAD
		{"replayed", func(r []byte) []byte { return append(r, r...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := ourPair(t)
			recs := tc.alter(sealedBy(t, s, typeAppData, []byte("hello")))
			if tc.name == "replayed" {
				// The first copy is read; the second must not be.
				if _, err := s.raw.Write(recs); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
					t.Fatalf("first copy: %q, %v", buf, err)
				}
			} else if _, err := s.raw.Write(recs); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if n != 0 || err == nil || !strings.Contains(err.Error(), "authentication") {
				t.Fatalf("read %d bytes, %v; want none and an authentication failure", n, err)
			}
			c.Close()
			_, err = io.ReadAll(s)
			if !errors.Is(err, alertError(alertBadMAC)) {
				t.Fatalf("peer read %v after the close, want alert bad_record_mac", err)
			}
		})
	}
}

// Post-handshake messages a peer may send: tickets (read and ignored, even
// split across records) and key updates (applied; answered when asked).
func TestPostHandshakeMessages(t *testing.T) {
	t.Run("ticket split across records", func(t *testing.T) {
		c, s := ourPair(t)
		ticket := []byte{hsNewTicket, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0}
		ticket = ticket[:4+10]
		recs := sealedBy(t, s, typeHandshake, ticket[:3], ticket[3:9], ticket[9:])
		recs = append(recs, sealedBy(t, s, typeAppData, []byte("after"))...)
		if _, err := s.raw.Write(recs); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "after" {
			t.Fatalf("got %q, %v", buf, err)
		}
		if c.tickets != 1 {
			t.Fatalf("%d tickets seen, want 1", c.tickets)
		}
	})
	t.Run("ticket to a server", func(t *testing.T) {
		c, s := ourPair(t)
		if _, err := c.raw.Write(sealedBy(t, c, typeHandshake, []byte{hsNewTicket, 0, 0, 0})); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "unexpected TLS handshake message") {
			t.Fatalf("server read %v", err)
		}
	})
	t.Run("key update not last in its record", func(t *testing.T) {
		c, s := ourPair(t)
		msg := []byte{hsKeyUpdate, 0, 0, 1, 0, hsKeyUpdate, 0, 0, 1, 0}
		if _, err := s.raw.Write(sealedBy(t, s, typeHandshake, msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "not at the end") {
			t.Fatalf("read %v", err)
		}
	})
	t.Run("we answer an update the peer asks for", func(t *testing.T) {
		c, s := ourPair(t)
		cOut, sIn := c.out.secret, s.in.secret
		if err := s.writeKeyUpdate(true); err != nil {
			t.Fatal(err)
		}
		xyExchange(t, s, c) // c reads the request before "x", answers before "y"
		exchange(t, c, s, 1<<20)
		c.wmu.Lock()
		changed := !bytes.Equal(cOut, c.out.secret)
		c.wmu.Unlock()
		s.rmu.Lock()
		followed := !bytes.Equal(sIn, s.in.secret)
		s.rmu.Unlock()
		if !changed || !followed {
			t.Fatalf("our write key changed %v, the peer's read key followed %v", changed, followed)
		}
	})
	t.Run("update requests while our writer is stuck start one answer", func(t *testing.T) {
		c, s := ourPair(t)
		var recs []byte
		for range maxUseless {
			recs = append(recs, sealedBy(t, s, typeHandshake, []byte{hsKeyUpdate, 0, 0, 1, 1})...)
			if err := s.out.update(); err != nil {
				t.Fatal(err)
			}
		}
		recs = append(recs, sealedBy(t, s, typeAppData, []byte("x"))...)
		c.wmu.Lock() // as a writer blocked on a peer that does not read
		before := runtime.NumGoroutine()
		if _, err := s.raw.Write(recs); err != nil {
			c.wmu.Unlock()
			t.Fatal(err)
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		after := runtime.NumGoroutine()
		c.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if after > before+2 {
			t.Fatalf("%d goroutines after %d update requests, %d before", after, maxUseless, before)
		}
	})
	t.Run("a flood of records without data is refused", func(t *testing.T) {
		c, s := ourPair(t)
		var recs []byte
		for range maxUseless + 1 {
			recs = append(recs, sealedBy(t, s, typeAppData, nil)...)
		}
		if _, err := s.raw.Write(recs); err != nil {
			t.Fatal(err)
		}
		_, err := c.Read(make([]byte, 1))
		if err == nil || !strings.Contains(err.Error(), "too many TLS records without application data") {
			t.Fatalf("read %v", err)
		}
	})
}

// A read deadline ends a Read, not the connection: once it is lifted,
// reading goes on where it stopped, even inside a record.
func TestReadDeadlineIsNotTheEnd(t *testing.T) {
	c, s := ourPair(t)
	recs := sealedBy(t, s, typeAppData, []byte("late"))
	if _, err := s.raw.Write(recs[:7]); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 4)); !isTimeout(err) {
		t.Fatalf("read %v, want a timeout", err)
	}
	if got := c.rend - c.roff; got != 7 {
		t.Fatalf("%d bytes of the record buffered at the deadline, want 7", got)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := s.raw.Write(recs[7:]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
		t.Fatalf("after the deadline: %q, %v", buf, err)
	}
}

// An idle connection, waiting in Read, holds no read buffer, even after a
// bulk transfer, or after records that carried no data (a key update, a
// ticket): every read from the socket either follows a wait for it, made
// holding no buffer, or completes a record already begun.
func TestIdleConnectionHoldsNoReadBuffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		noData func(t *testing.T, s *TLSConn)
	}{
		{"after bulk", func(*testing.T, *TLSConn) {}},
		{"after a key update", func(t *testing.T, s *TLSConn) {
			if err := s.writeKeyUpdate(false); err != nil {
				t.Fatal(err)
			}
		}},
		{"after a ticket", func(t *testing.T, s *TLSConn) {
			if _, err := s.raw.Write(sealedBy(t, s, typeHandshake, []byte{hsNewTicket, 0, 0, 0})); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := ourPair(t)
			var mu sync.Mutex
			var reads, holding int
			testHookRead = func(rc *TLSConn, waited bool) {
				if rc != c {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				reads++
				if !waited && rc.rend == rc.roff {
					holding++ // would wait holding an empty buffer
				}
			}
			t.Cleanup(func() { testHookRead = nil })
			exchange(t, c, s, 1<<20)
			tc.noData(t, s)
			// The reader takes the record without data, then waits until
			// the deadline.
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
				t.Fatalf("read %v, want a timeout", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if holding > 0 {
				t.Fatalf("%d of %d socket reads waited holding an empty read buffer", holding, reads)
			}
		})
	}
}

// A connection the peer resets says so; it is not taken for a cut.
func TestResetIsReported(t *testing.T) {
	c, s := ourPair(t)
	xyExchange(t, c, s)
	_ = s.raw.(*net.TCPConn).SetLinger(0)
	s.raw.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("read %v, want connection reset", err)
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
	c, peer := withCryptoTLS(t, cli, srv)
	if got := c.ConnectionState().CipherSuite; got != want {
		t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(want))
	}
	exchange(t, c, peer, 1<<20)
	askKeyUpdate(t, c, peer, 1<<20)
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
