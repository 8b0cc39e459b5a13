package bench

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
)

// TestForwarderChain runs the server and both forwarder hops in-process on
// loopback, so the copy, half-close and TLS logic is tested without root.
func TestForwarderChain(t *testing.T) {
	pki, err := newPKI(t.TempDir(), Node1ProxyID, Node2ProxyID)
	if err != nil {
		t.Fatal(err)
	}
	files := func(self, peer string) tlsFiles {
		f, _ := pki.Leaf(self)
		return tlsFiles{CA: pki.CAFile, Cert: f.Cert, Key: f.Key, PeerID: peer}
	}
	srvTLS, err := serverTLSConfig(files(Node2ProxyID, Node1ProxyID))
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := clientTLSConfig(files(Node1ProxyID, Node2ProxyID))
	if err != nil {
		t.Fatal(err)
	}
	// A first hop that expects another identity than the one presented.
	wrongPeer, err := clientTLSConfig(files(Node1ProxyID, "spiffe://cluster.local/ns/other/sa/x"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		in2, out1 *tls.Config
		wantFail  bool
	}{
		{name: "tcp"},
		{name: "tls", in2: srvTLS, out1: cliTLS},
		{name: "tls wrong peer", in2: srvTLS, out1: wrongPeer, wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			listen := func() net.Listener {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				return ln
			}
			srv, ln2, ln1 := listen(), listen(), listen()
			log := slog.New(slog.DiscardHandler)
			hop2 := &forwarder{cfg: forwarderConfig{Target: srv.Addr().String(), InTLS: tc.in2, Buffer: bigBuffer}, log: log}
			hop1 := &forwarder{cfg: forwarderConfig{Target: ln2.Addr().String(), OutTLS: tc.out1, Buffer: bigBuffer}, log: log}
			wg.Go(func() { _ = serve(ctx, srv, func(c net.Conn) { serveConn(c, func(ConnReport) {}) }) })
			wg.Go(func() { _ = hop2.serve(ctx, ln2) })
			wg.Go(func() { _ = hop1.serve(ctx, ln1) })
			addr := ln1.Addr().String()

			// Echo: bytes come back through both hops.
			c, err := dialMode(ctx, addr, modeEcho)
			if err != nil && tc.wantFail && strings.Contains(err.Error(), "write mode") {
				return // the first hop refused the peer and closed already
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := []byte("ping through two hops")
			_, err = c.Write(msg)
			if err != nil && tc.wantFail {
				return // the first hop refused the peer and closed already
			}
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			_, err = io.ReadFull(c, got)
			if tc.wantFail {
				if err == nil {
					t.Fatal("echo crossed a hop whose peer has the wrong identity")
				}
				return
			}
			if err != nil || string(got) != string(msg) {
				t.Fatalf("echo = %q, %v; want %q", got, err, msg)
			}

			// Sink: the half-close crosses both hops and the count comes back.
			s, err := dialMode(ctx, addr, modeSink)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const n = 3*bigBuffer + 17
			if _, err := s.Write(make([]byte, n)); err != nil {
				t.Fatal(err)
			}
			count, err := sinkAck(s)
			if err != nil {
				t.Fatal(err)
			}
			if count != n {
				t.Errorf("sink read %d bytes, want %d", count, n)
			}
		})
	}
}
