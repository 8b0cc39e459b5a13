package echo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

var testID = Identity{Pod: "echo-v1-abc", Namespace: "test-ns", Version: "v1"}

// testServer is a real Server on loopback ephemeral ports.
type testServer struct {
	*Server
	log  *logBuffer
	stop func() error // cancels Serve and returns its error
}

func startServer(t *testing.T, drain time.Duration) *testServer {
	t.Helper()
	logs := &logBuffer{}
	srv, err := Listen(Config{
		Identity:     testID,
		HTTPAddr:     "127.0.0.1:0",
		GRPCAddr:     "127.0.0.1:0",
		TCPAddr:      "127.0.0.1:0",
		Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
		DrainTimeout: drain,
	})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-errc:
			case <-time.After(drain + 10*time.Second):
				t.Errorf("Serve did not return after cancel")
			}
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: srv, log: logs, stop: stop}
}

// logBuffer collects the server's JSON log lines; handlers write to it from
// many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the decoded log records with the given message.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	data := bytes.Clone(b.buf.Bytes())
	b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// distinctClients counts the client addresses logged under msg.
func (b *logBuffer) distinctClients(t *testing.T, msg string) int {
	t.Helper()
	seen := map[any]bool{}
	for _, rec := range b.lines(t, msg) {
		seen[rec["client"]] = true
	}
	return len(seen)
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
