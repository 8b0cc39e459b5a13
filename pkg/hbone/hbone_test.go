package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/spiffe/spiffetest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// tlsPair returns client and server TLS configs for mesh identities issued
// by one test CA, as ztunnels use them: TLS 1.3, ALPN h2, client certs.
func tlsPair(t testing.TB) (client, server *tls.Config) {
	client, server, _ = tlsPairCA(t)
	return client, server
}

// tlsPairCA is tlsPair that also returns the CA.
func tlsPairCA(t testing.TB) (client, server *tls.Config, ca *spiffetest.CA) {
	ca = spiffetest.NewCA(t)
	td := "cluster.local"
	srvCert := ca.Issue(t, spiffe.Identity{TrustDomain: td, Namespace: "ns", ServiceAccount: "server"}, time.Hour)
	cliCert := ca.Issue(t, spiffe.Identity{TrustDomain: td, Namespace: "ns", ServiceAccount: "client"}, time.Hour)
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		_, err := spiffe.VerifyPeer(raw, ca.Pool, td)
		return err
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{srvCert},
		ClientAuth:   tls.RequireAnyClientCert,
		NextProtos:   []string{"h2"},
	}
	server.VerifyPeerCertificate = verify
	client = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cliCert},
		InsecureSkipVerify: true, // identity is checked by URI SAN below
		NextProtos:         []string{"h2"},
	}
	client.VerifyPeerCertificate = verify
	return client, server, ca
}

// listen serves HBONE with handle on a loopback TLS listener, over
// TLSServer as ztunnel runs it.
func listen(t testing.TB, cfg *tls.Config, handle func(*Stream)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				go func() { <-ctx.Done(); nc.Close() }()
				tc, err := TLSServer(ctx, nc, cfg)
				if err != nil {
					nc.Close()
					return
				}
				_ = Serve(ctx, tc, handle)
			}()
		}
	}()
	return ln.Addr().String()
}

// dial opens an HBONE connection to addr over TLSClient, as ztunnel does.
func dial(t testing.TB, cfg *tls.Config, addr string) *ClientConn {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := TLSClient(context.Background(), raw, cfg)
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	cc, err := NewClientConn(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// echo answers 200 and sends every byte back, then ends its direction.
func echo(s *Stream) {
	defer s.Close()
	if err := s.Respond(200); err != nil {
		return
	}
	echoAnswered(s)
}

// echoAnswered is echo for a stream already answered 200.
func echoAnswered(s *Stream) {
	if _, err := io.Copy(s, s); err == nil {
		_ = s.CloseWrite()
	}
	// Wait for the peer's last word before closing cleanly.
	_, _ = io.Copy(io.Discard, s)
}

// roundTrip sends size random bytes through s and checks the same bytes
// come back.
func roundTrip(s *Stream, size int) error {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, s)
	if err != nil {
		return fmt.Errorf("read back: %w after %d bytes", err, n)
	}
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), sum(data)) {
		return fmt.Errorf("got %d bytes back (hash mismatch), sent %d", n, size)
	}
	return nil
}

func sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

func TestEchoManyStreamsOneConnection(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, echo)
	cc := dial(t, cli, addr)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := cc.Open(context.Background(), fmt.Sprintf("10.0.0.%d:8080", i+1), map[string][]string{"forwarded": {`for="10.0.0.99:1234"`}})
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			if err := roundTrip(s, 3<<20+i*1000); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServerSeesAuthorityAndHeaders(t *testing.T) {
	cli, srv := tlsPair(t)
	got := make(chan *Stream, 1)
	addr := listen(t, srv, func(s *Stream) { got <- s; echo(s) })
	cc := dial(t, cli, addr)
	s, err := cc.Open(context.Background(), "10.1.2.3:9090", map[string][]string{"Baggage": {"k8s.namespace.name=ns"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st := <-got
	if st.Authority != "10.1.2.3:9090" {
		t.Errorf("authority %q", st.Authority)
	}
	if v := st.Header["baggage"]; len(v) != 1 || v[0] != "k8s.namespace.name=ns" {
		t.Errorf("baggage header %v", st.Header)
	}
}

func TestHalfClose(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		// Read the whole request, then answer after the client's FIN.
		req, _ := io.ReadAll(s)
		_, _ = s.Write([]byte("got " + string(req)))
		_ = s.CloseWrite()
	})
	cc := dial(t, cli, addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, _ = s.Write([]byte("hello"))
	_ = s.CloseWrite()
	reply, err := io.ReadAll(s)
	if err != nil || string(reply) != "got hello" {
		t.Fatalf("reply %q, %v", reply, err)
	}
}

func TestRefusedConnect(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) { _ = s.Respond(http.StatusServiceUnavailable); s.Close() })
	cc := dial(t, cli, addr)
	_, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Open: %v, want a 503 error", err)
	}
	// The connection still serves other streams.
	if !cc.Usable() {
		t.Fatal("connection unusable after a refused stream")
	}
}

// A stream whose reader stalls must not hold up the others: its data waits
// in its own buffer, bounded by its window.
// TestNoHeadOfLineBlocking: streams whose readers stop hold only their
// own stream windows. Many more of them than the connection window could
// hold (the connection's credit goes back as bytes arrive, not as readers
// take them) still leave every one of them its full window and a fresh
// stream on the same connection moving at full speed.
func TestNoHeadOfLineBlocking(t *testing.T) {
	const stalls = 2*connWindow/streamWindow + 8
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		if strings.HasPrefix(s.Authority, "10.0.0.1:") {
			// A firehose the client never reads.
			buf := make([]byte, 64<<10)
			for {
				if _, err := s.Write(buf); err != nil {
					return
				}
			}
		}
		if _, err := io.Copy(s, s); err == nil {
			_ = s.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, s)
	})
	cc := dial(t, cli, addr)
	var stalled []*Stream
	for i := 0; i < stalls; i++ {
		s, err := cc.Open(context.Background(), fmt.Sprintf("10.0.0.1:%d", i+1), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stalled = append(stalled, s)
	}
	buffered := func() (full int, total int) {
		cc.c.mu.Lock()
		defer cc.c.mu.Unlock()
		for _, s := range stalled {
			total += s.rx.n
			if s.rx.n == streamWindow {
				full++
			}
		}
		return full, total
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		full, total := buffered()
		if full == stalls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d unread streams hold their full %d KiB window (%d KiB in all): the others are starved", full, stalls, streamWindow>>10, total>>10)
		}
	}
	done := make(chan error, 1)
	go func() {
		s, err := cc.Open(context.Background(), "10.0.0.2:2", nil)
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		done <- roundTrip(s, 8<<20)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%d stalled streams blocked another stream on the same connection", stalls)
	}
}

func TestStreamLimit(t *testing.T) {
	cli, srv := tlsPair(t)
	hold := make(chan struct{})
	addr := listen(t, srv, func(s *Stream) { defer s.Close(); _ = s.Respond(200); <-hold })
	defer close(hold)
	cc := dial(t, cli, addr)
	for i := 0; i < MaxConcurrentStreams; i++ {
		if _, err := cc.Open(context.Background(), "10.0.0.1:80", nil); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	if cc.Usable() {
		t.Error("connection with 100 streams still reports room")
	}
	if _, err := cc.Open(context.Background(), "10.0.0.1:80", nil); !errors.Is(err, ErrConnFull) {
		t.Fatalf("stream 101: %v, want ErrConnFull", err)
	}
}

// Our client against Go's standard HTTP/2 server, and its client against
// our server: the wire format is plain RFC 9113 CONNECT.
func TestInteropWithNetHTTP(t *testing.T) {
	cli, srv := tlsPair(t)
	t.Run("our client, net/http server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{TLSConfig: srv, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodConnect || r.Host != "10.9.9.9:80" || r.ProtoMajor != 2 {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 {
					_, _ = w.Write(buf[:n])
					w.(http.Flusher).Flush()
				}
				if err != nil {
					return
				}
			}
		})}
		go func() { _ = hs.ServeTLS(ln, "", "") }()
		defer hs.Close()
		cc := dial(t, cli, ln.Addr().String())
		s, err := cc.Open(context.Background(), "10.9.9.9:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := roundTrip(s, 2<<20); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("net/http client, our server", func(t *testing.T) {
		addr := listen(t, srv, echo)
		tr := &http.Transport{TLSClientConfig: cli, ForceAttemptHTTP2: true}
		defer tr.CloseIdleConnections()
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodConnect, "https://"+addr, pr)
		req.Host = "10.9.9.9:80"
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("status %d over %s", resp.StatusCode, resp.Proto)
		}
		data := make([]byte, 1<<20)
		_, _ = rand.Read(data)
		go func() { _, _ = pw.Write(data); pw.Close() }()
		back, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("echo through our server: %d bytes, %v", len(back), err)
		}
	})
}

// Requests that are not CONNECT, or lack an authority, are refused per
// stream (RST_STREAM PROTOCOL_ERROR) and never reach the handler; the
// connection carries on.
func TestServerRejectsMalformedRequests(t *testing.T) {
	cli, srv := tlsPair(t)
	called := make(chan string, 4)
	addr := listen(t, srv, func(s *Stream) { called <- s.Authority; echo(s) })
	nc, err := tls.Dial("tcp", addr, cli)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(nc, nc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	request := func(id uint32, fields ...string) {
		hb.Reset()
		for i := 0; i < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	_ = fr.WriteSettings()
	request(1, ":method", "GET", ":scheme", "https", ":path", "/", ":authority", "10.0.0.1:80")
	request(3, ":method", "CONNECT")
	request(5, ":method", "CONNECT", ":authority", "10.0.0.1:80", ":path", "/")
	request(7, ":method", "CONNECT", ":authority", "10.0.0.1:80")
	// Resets for the three malformed streams, a 200 for the good one.
	want := map[uint32]bool{1: true, 3: true, 5: true, 7: true}
	for len(want) > 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for resets of %v: %v", want, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == 7 || !want[f.StreamID] || f.ErrCode != http2.ErrCodeProtocol {
				t.Fatalf("unexpected reset of stream %d (%v)", f.StreamID, f.ErrCode)
			}
			delete(want, f.StreamID)
		case *http2.MetaHeadersFrame:
			if f.StreamID != 7 || f.PseudoValue("status") != "200" {
				t.Fatalf("unexpected response on stream %d: %v", f.StreamID, f.Fields)
			}
			delete(want, 7)
		}
	}
	if a := <-called; a != "10.0.0.1:80" {
		t.Fatalf("handler called with %q", a)
	}
	select {
	case a := <-called:
		t.Fatalf("handler called for a malformed request (authority %q)", a)
	default:
	}
}

// A peer that floods PINGs and never reads must not wedge the server's
// reader on a full socket: the server gives up on it instead.
func TestPingFloodWithoutReadingEndsTheConnection(t *testing.T) {
	client, server := net.Pipe() // unbuffered: every server write blocks until read
	defer client.Close()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), server, func(s *Stream) { s.Close() }) }()
	go func() {
		fr := http2.NewFramer(client, client)
		if _, err := client.Write([]byte(http2.ClientPreface)); err != nil {
			return
		}
		// Take the server's opening SETTINGS and WINDOW_UPDATE, then never
		// read again.
		for i := 0; i < 2; i++ {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
		_ = fr.WriteSettings()
		for i := 0; i < 5*maxQueuedControl; i++ {
			if fr.WritePing(false, [8]byte{byte(i)}) != nil {
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Serve ended without an error")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server stuck on a peer that does not read")
	}
}

// chunky yields its data in reads of varying sizes, as a socket does.
type chunky struct {
	data []byte
	i    int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.i++
	n := min(len(p), len(c.data), []int{1, 700, 16 << 10, 300 << 10}[c.i%4])
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// ReadFrom and WriteTo (what relays use) carry bulk data intact on many
// streams at once, through the zero-copy framing, the buffer switch and
// flow control.
func TestReadFromAndWriteTo(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, echo) // echo's io.Copy(s, s) is s.WriteTo(s)
	cc := dial(t, cli, addr)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := cc.Open(context.Background(), "10.0.0.1:8080", nil)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			data := make([]byte, 5<<20+i*977)
			_, _ = rand.Read(data)
			go func() {
				n, err := s.ReadFrom(&chunky{data: data})
				if err == nil && n != int64(len(data)) {
					err = fmt.Errorf("ReadFrom sent %d of %d bytes", n, len(data))
				}
				if err != nil {
					errs <- err
				}
				_ = s.CloseWrite()
			}()
			var got bytes.Buffer
			if _, err := s.WriteTo(&got); err != nil {
				errs <- fmt.Errorf("WriteTo: %w", err)
				return
			}
			if !bytes.Equal(got.Bytes(), data) {
				errs <- fmt.Errorf("stream %d: got %d bytes back, not the %d sent", i, got.Len(), len(data))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// WriteTo a socket lets the connection's reader write arriving frames to
// the socket itself while WriteTo is idle; with a consumer slower than the
// tunnel the socket fills, and the rest must go through the buffer, in
// order, with the byte count right.
func TestWriteToSocket(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, echo)
	cc := dial(t, cli, addr)
	for _, slow := range []bool{false, true} {
		t.Run(fmt.Sprintf("slow consumer %v", slow), func(t *testing.T) {
			s, err := cc.Open(context.Background(), "10.0.0.1:8080", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			out, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			in, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			data := make([]byte, 8<<20)
			_, _ = rand.Read(data)
			go func() {
				_, _ = s.ReadFrom(&chunky{data: data})
				_ = s.CloseWrite()
			}()
			got := make(chan []byte, 1)
			go func() {
				var b bytes.Buffer
				chunk := make([]byte, 64<<10)
				if slow {
					chunk = chunk[:512] // many small reads: the socket fills
				}
				for {
					n, err := in.Read(chunk)
					b.Write(chunk[:n])
					if err != nil {
						break
					}
				}
				got <- b.Bytes()
			}()
			n, err := s.WriteTo(out)
			if err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			out.Close()
			if n != int64(len(data)) {
				t.Errorf("WriteTo counted %d bytes, want %d", n, len(data))
			}
			if b := <-got; !bytes.Equal(b, data) {
				t.Errorf("socket got %d bytes, not the %d sent in order", len(b), len(data))
			}
			// Every byte consumed is credited back exactly once: what the
			// peer may still send plus what is owed to it is the window.
			cc.c.mu.Lock()
			window := cc.c.recvWindow + cc.c.recvUnacked
			cc.c.mu.Unlock()
			if window != connWindow {
				t.Errorf("connection window accounts for %d bytes, want %d", window, connWindow)
			}
		})
	}
}

// TestPaddedData: DATA frames with padding, small and large, reach the
// stream without their padding, and the connection keeps flowing past
// the windows (the padding's credit comes back).
func TestPaddedData(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []byte, 1)
	go func() {
		_ = Serve(ctx, server, func(s *Stream) {
			defer s.Close()
			_ = s.Respond(200)
			b, _ := io.ReadAll(s)
			got <- b
		})
	}()
	if _, err := client.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(client, client)
	go func() {
		// Drain what the server sends (settings, acks, credit, the 200).
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.1:80"})
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	pad := make([]byte, 255)
	// 80 frames of 16 KiB minus padding: more than the default 64 KiB
	// windows, so the transfer only completes if credit comes back.
	for i := 0; i < 80; i++ {
		size := 16384 - 1 - 255
		if i%2 == 0 {
			size = 7 // small frames take the other path
		}
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		want.Write(chunk)
		if err := fr.WriteDataPadded(1, false, chunk, pad); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteDataPadded(1, true, nil, pad[:3]); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("stream read %d bytes, want %d without padding", len(b), want.Len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end: credit for padded frames not returned?")
	}
}

// TestBulkLeavesNoBufferBehind: after a bulk transfer ends, a connection
// keeps no frame-sized buffer. A node proxy holds a pooled connection to
// every peer it talks to, so a 256 KiB buffer left on each would add up.
func TestBulkLeavesNoBufferBehind(t *testing.T) {
	cli, srv := tlsPair(t)
	done := make(chan struct{}, 64)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		_, _ = io.Copy(io.Discard, s)
		_ = s.CloseWrite()
		done <- struct{}{}
	})
	const conns = 40
	var ccs []*ClientConn
	for range conns {
		ccs = append(ccs, dial(t, cli, addr))
	}
	before := heapAfterGC()
	chunk := make([]byte, 1<<20)
	for i, cc := range ccs {
		s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Half write, half relay as ztunnel does (ReadFrom).
		if i%2 == 0 {
			_, err = s.Write(chunk)
		} else {
			_, err = s.ReadFrom(bytes.NewReader(chunk))
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = s.CloseWrite()
		<-done
		_, _ = io.Copy(io.Discard, s)
		s.Close()
	}
	chunk = nil
	after := heapAfterGC()
	grown := int64(after) - int64(before)
	t.Logf("heap grew by %d KiB over %d connections after 1 MiB each", grown>>10, conns)
	if limit := int64(conns) * 128 << 10; grown > limit {
		t.Fatalf("heap grew by %d KiB, more than 128 KiB per connection: buffers kept after the transfer", grown>>10)
	}
}

// TestDrainedStreamHoldsNoBuffer: a tunnel that stays open after a burst
// its reader fell behind on holds no receive buffer once the burst is read.
// Long-lived tunnels (database pools, streaming RPC) are most of a node
// proxy's connections, and each would otherwise keep its largest burst.
func TestDrainedStreamHoldsNoBuffer(t *testing.T) {
	cli, srv := tlsPair(t)
	const burst = 768 << 10
	type held struct{ buffered, after int }
	got := make(chan held, 2)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		for range 2 {
			// Fall behind: let the whole burst arrive before reading.
			var h held
			deadline := time.Now().Add(10 * time.Second)
			for h.buffered < burst && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				s.c.mu.Lock()
				h.buffered = s.rx.n
				s.c.mu.Unlock()
			}
			if _, err := io.ReadFull(s, make([]byte, burst)); err != nil {
				t.Error(err)
				return
			}
			s.c.mu.Lock()
			h.after = s.rx.held()
			s.c.mu.Unlock()
			got <- h
		}
	})
	cc := dial(t, cli, addr)
	s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 2 {
		if _, err := s.Write(make([]byte, burst)); err != nil {
			t.Fatal(err)
		}
		h := <-got
		if h.buffered != burst {
			t.Fatalf("burst %d: %d bytes buffered before reading, want all %d (the test needs the reader behind)", i+1, h.buffered, burst)
		}
		if h.after != 0 {
			t.Fatalf("burst %d: the open, drained stream holds %d KiB of receive buffer, want none", i+1, h.after>>10)
		}
	}
}

// TestBufferStaysWithinTheWindow: a stream whose socket drains faster than
// the network delivers (the reader spends its time filling the buffer while
// WriteTo catches up) keeps its buffer within its bound, the stream window
// and a chunk, however much passes through.
func TestBufferStaysWithinTheWindow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	client, server := net.Pipe()
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		n      int64
		maxCap int
	}
	res := make(chan result, 1)
	go func() {
		_ = Serve(ctx, server, func(s *Stream) {
			defer s.Close()
			_ = s.Respond(200)
			up, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer up.Close()
			stop := make(chan struct{})
			maxCap := make(chan int, 1)
			go func() {
				m := 0
				for {
					s.c.mu.Lock()
					m = max(m, s.rx.held())
					s.c.mu.Unlock()
					select {
					case <-stop:
						maxCap <- m
						return
					case <-time.After(100 * time.Microsecond):
					}
				}
			}()
			n, _ := s.WriteTo(up)
			close(stop)
			res <- result{n, <-maxCap}
		})
	}()
	if _, err := client.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(client, client)
	// Credit the server grants, as a sender must respect it.
	var mu sync.Mutex
	credit := int64(65535)
	more := sync.NewCond(&mu)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					credit += int64(v) - 65535
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 1 {
					credit += int64(f.Increment)
				}
			}
			more.Broadcast()
			mu.Unlock()
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "10.0.0.1:80"})
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	const size, frames = 256 << 10, 120
	payload := make([]byte, size)
	for range frames {
		mu.Lock()
		for credit < size {
			more.Wait()
		}
		credit -= size
		mu.Unlock()
		// The header, a pause, then the payload: the server's reader
		// waits with the buffer's end open while WriteTo drains it.
		var h [9]byte
		h[0], h[1], h[2] = byte(size>>16), byte(size>>8&0xff), byte(size&0xff)
		h[3] = byte(http2.FrameData)
		binary.BigEndian.PutUint32(h[5:], 1)
		if _, err := client.Write(h[:]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Microsecond)
		if _, err := client.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteData(1, true, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		t.Logf("%d bytes through, largest buffer %d KiB", r.n, r.maxCap>>10)
		if r.n != size*frames {
			t.Fatalf("%d bytes through, want %d", r.n, size*frames)
		}
		if r.maxCap > maxStreamBuf {
			t.Fatalf("the buffer grew to %d KiB, past its bound of %d KiB (the stream window and a chunk)", r.maxCap>>10, maxStreamBuf>>10)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("transfer did not finish")
	}
}

// TestClosedStreamsReturnConnectionCredit: streams closed with bytes still
// in their buffers give those bytes' connection credit back, so a pooled
// connection whose clients abandon tunnels mid-transfer keeps flowing.
func TestClosedStreamsReturnConnectionCredit(t *testing.T) {
	cli, srv := tlsPair(t)
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		if s.Authority == "10.0.0.2:80" {
			echoAnswered(s)
			return
		}
		// Take one byte, then abandon the rest.
		var b [1]byte
		_, _ = io.ReadFull(s, b[:])
	})
	cc := dial(t, cli, addr)
	chunk := make([]byte, 1<<20)
	done := make(chan error, 1)
	go func() {
		// 40 MiB abandoned in all, over two and a half connection windows.
		for range 40 {
			s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
			if err != nil {
				done <- err
				return
			}
			_, _ = s.Write(chunk)
			_, _ = io.Copy(io.Discard, s)
			s.Close()
		}
		s, err := cc.Open(context.Background(), "10.0.0.2:80", nil)
		if err == nil {
			err = roundTrip(s, 64<<10)
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the connection stalled: credit of abandoned streams not returned")
	}
}

// TestIdleSendersHoldNoBuffer: tunnels that carried a bulk transfer from
// their app's socket and now wait for it hold no send buffer. A node
// proxy keeps many long-lived, mostly idle tunnels (database pools, say);
// each kept the 256 KiB buffer of its last transfer while waiting.
func TestIdleSendersHoldNoBuffer(t *testing.T) {
	cli, srv := tlsPair(t)
	const tunnels, bulk = 16, 1 << 20
	var received atomic.Int64
	addr := listen(t, srv, func(s *Stream) {
		defer s.Close()
		_ = s.Respond(200)
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	cc := dial(t, cli, addr)
	var peers []net.Conn
	for range tunnels {
		s, err := cc.Open(context.Background(), "10.0.0.1:80", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		app, peer := tcpPair(t)
		go func() { _, _ = s.ReadFrom(app) }()
		peers = append(peers, peer)
	}
	before := heapAfterGC()
	for _, p := range peers {
		go func() { _, _ = p.Write(make([]byte, bulk)) }()
	}
	// Once the server has every byte, every sender waits on its app.
	deadline := time.Now().Add(20 * time.Second)
	for received.Load() < tunnels*bulk {
		if time.Now().After(deadline) {
			t.Fatalf("the server received %d of %d bytes", received.Load(), tunnels*bulk)
		}
		time.Sleep(time.Millisecond)
	}
	after := heapAfterGC()
	if grown := int64(after) - int64(before); grown > tunnels*64<<10 {
		t.Fatalf("%d idle tunnels hold %d KiB more heap than before their transfers; want less than 64 KiB each", tunnels, grown>>10)
	}
}

// heapAfterGC is the live heap once garbage is gone: collected twice,
// since pooled buffers survive one collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
