package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a process's output for polling.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// opensslBinary finds openssl, which make deps installs.
func opensslBinary(t *testing.T) string {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: make deps installs it")
	}
	return openssl
}

// writePEM writes a certificate and its key for openssl.
func writePEM(t *testing.T, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestOpenSSLInterop checks our server's records against another TLS 1.3
// stack, OpenSSL's s_client, in every TLS 1.3 suite: AES-256-GCM with its
// SHA-384 secrets (which crypto/tls never picks against itself here)
// included. Each side asks the other for a key update, which must be
// answered, and the connection ends with close_notify.
func TestOpenSSLInterop(t *testing.T) {
	openssl := opensslBinary(t)
	cli, srv := tlsPair(t)
	certFile, keyFile := writePEM(t, cli.Certificates[0])
	for _, suite := range []uint16{tls.TLS_AES_256_GCM_SHA384, tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256} {
		name := tls.CipherSuiteName(suite)
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", ln.Addr().String(), "-tls1_3",
				"-ciphersuites", name, "-alpn", "h2", "-cert", certFile, "-key", keyFile, "-no_ign_eof")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { stdin.Close(); _ = cmd.Wait() }()
			waitFor := func(s string) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for !strings.Contains(out.String(), s) {
					if time.Now().After(deadline) {
						t.Fatalf("no %q from openssl; it printed:\n%s", s, out.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}

			stop := context.AfterFunc(ctx, func() { ln.Close() }) // s_client may never connect
			defer stop()
			raw, err := ln.Accept()
			if err != nil {
				t.Fatalf("accept: %v\nopenssl printed:\n%s", err, out.String())
			}
			c := handshakeOpenSSL(ctx, t, raw, srv, true, suite, &out)
			defer c.Close()
			secrets := func() (in, out []byte) {
				c.rmu.Lock()
				in = c.in.secret
				c.rmu.Unlock()
				c.wmu.Lock()
				out = c.out.secret
				c.wmu.Unlock()
				return in, out
			}
			readLine := func(want string) {
				t.Helper()
				buf := make([]byte, len(want))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
					t.Fatalf("read %q, %v; want %q\nopenssl printed:\n%s", buf, err, want, out.String())
				}
			}

			// We ask for an update; OpenSSL's answer comes before "more".
			if _, err := io.WriteString(stdin, "ping\n"); err != nil {
				t.Fatal(err)
			}
			readLine("ping\n")
			in0, _ := secrets()
			if err := c.writeKeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			_, out1 := secrets()
			if _, err := c.Write([]byte("pong\n")); err != nil {
				t.Fatal(err)
			}
			waitFor("pong")
			if _, err := io.WriteString(stdin, "more\n"); err != nil {
				t.Fatal(err)
			}
			readLine("more\n")
			if in1, _ := secrets(); bytes.Equal(in0, in1) {
				t.Fatalf("OpenSSL did not answer our key update request\n%s", out.String())
			}
			// OpenSSL asks for one ("K"); ours goes out before "done".
			if _, err := io.WriteString(stdin, "K\n"); err != nil {
				t.Fatal(err)
			}
			waitFor("KEYUPDATE") // s_client takes a command line alone
			if _, err := io.WriteString(stdin, "again\n"); err != nil {
				t.Fatal(err)
			}
			readLine("again\n")
			if _, err := c.Write([]byte("done\n")); err != nil {
				t.Fatal(err)
			}
			waitFor("done")
			if _, out2 := secrets(); bytes.Equal(out1, out2) {
				t.Fatalf("we did not answer OpenSSL's key update request\n%s", out.String())
			}
			// Our close_notify ends OpenSSL's session cleanly.
			c.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("openssl: %v\n%s", err, out.String())
			}
		})
	}
}

// TestOpenSSLServerInterop checks our client's records against OpenSSL's
// s_server, which sends two session tickets after the handshake (read and
// ignored here) and echoes lines reversed, in every TLS 1.3 suite; our key
// update request is answered.
func TestOpenSSLServerInterop(t *testing.T) {
	openssl := opensslBinary(t)
	cli, srv, ca := tlsPairCA(t)
	certFile, keyFile := writePEM(t, srv.Certificates[0])
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, suite := range []uint16{tls.TLS_AES_256_GCM_SHA384, tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256} {
		name := tls.CipherSuiteName(suite)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// s_server picks a free port and prints it ("ACCEPT
			// 127.0.0.1:PORT").
			cmd := exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:0", "-tls1_3", "-ciphersuites", name,
				"-alpn", "h2", "-cert", certFile, "-key", keyFile, "-Verify", "1", "-CAfile", caFile, "-rev", "-naccept", "1")
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = cmd.Wait() }()
			accept := regexp.MustCompile(`ACCEPT (127\.0\.0\.1:\d+)`)
			var addr string
			for deadline := time.Now().Add(20 * time.Second); ; {
				if m := accept.FindStringSubmatch(out.String()); m != nil {
					addr = m[1]
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("s_server did not say where it listens:\n%s", out.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c := handshakeOpenSSL(ctx, t, raw, cli, false, suite, &out)
			defer c.Close()
			inSecret := c.in.secret
			echo := func(line, want string) {
				t.Helper()
				if _, err := c.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, len(want))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
					t.Fatalf("read %q, %v; want %q\nopenssl printed:\n%s", buf, err, want, out.String())
				}
			}
			echo("olleh\n", "hello\n") // the tickets arrive before the answer
			c.rmu.Lock()
			tickets := c.tickets
			c.rmu.Unlock()
			if tickets == 0 {
				t.Fatalf("no session ticket from s_server: this test no longer covers them\n%s", out.String())
			}
			if err := c.writeKeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			echo("dlrow\n", "world\n")
			c.rmu.Lock()
			updated := !bytes.Equal(inSecret, c.in.secret)
			c.rmu.Unlock()
			if !updated {
				t.Fatalf("s_server did not answer our key update request\n%s", out.String())
			}
		})
	}
}

// handshakeOpenSSL runs our side's handshake with OpenSSL over raw, as the
// server or the client, and checks that suite was negotiated; out is what
// openssl printed, for the failure message.
func handshakeOpenSSL(ctx context.Context, t *testing.T, raw net.Conn, cfg *tls.Config, server bool, suite uint16, out *lockedBuffer) *TLSConn {
	t.Helper()
	hs := TLSClient
	if server {
		hs = TLSServer
	}
	c, err := hs(ctx, raw, cfg)
	if err != nil {
		raw.Close()
		t.Fatalf("handshake: %v\n%s", err, out.String())
	}
	if got := c.ConnectionState().CipherSuite; got != suite {
		c.Close()
		t.Fatalf("negotiated %s", tls.CipherSuiteName(got))
	}
	return c
}
