package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
)

// syncBuffer is a bytes.Buffer that the server may write while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The binary as a pod runs it: identity from the environment, then the
// client subcommand against each port.
func TestServeAndClient(t *testing.T) {
	t.Setenv("POD_NAME", "echo-7d9f-x1")
	t.Setenv("POD_NAMESPACE", "mesh-e2e")
	t.Setenv("VERSION", "v2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, []string{"--http-port=0", "--grpc-port=0", "--tcp-port=0"}, &bytes.Buffer{}, &stderr)
	}()
	addrs := waitForServing(t, &stderr)

	for scheme, port := range map[string]string{"http": "http", "h2c": "http", "grpc": "grpc", "tcp": "tcp"} {
		var stdout, errOut bytes.Buffer
		url := scheme + "://" + addrs[port]
		if code := run(ctx, []string{"client", "--url", url, "--count", "3", "--concurrency", "2"}, &stdout, &errOut); code != 0 {
			t.Errorf("client %s: exit %d, stderr %q, stdout %s", url, code, errOut.String(), stdout.String())
			continue
		}
		var sum echo.Summary
		if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
			t.Fatalf("client %s: summary is not JSON: %v\n%s", url, err, stdout.String())
		}
		if sum.OK != 3 || sum.ByPod["echo-7d9f-x1"] != 3 || sum.ByVersion["v2"] != 3 ||
			sum.First == nil || sum.First.Namespace != "mesh-e2e" {
			t.Errorf("client %s: summary %s, want 3 ok from mesh-e2e/echo-7d9f-x1 v2", url, stdout.String())
		}
	}

	cancel()
	select {
	case code := <-served:
		if code != 0 {
			t.Errorf("serve exited %d after cancel, want 0; log:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
	if !strings.Contains(stderr.String(), `"msg":"echo stopped"`) {
		t.Errorf("log lacks the stop line:\n%s", stderr.String())
	}
}

// waitForServing reads the bound ports from the server's start-up log line
// and returns loopback addresses for them, keyed http, grpc and tcp.
func waitForServing(t *testing.T, log *syncBuffer) map[string]string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(log.String()))
		for sc.Scan() {
			var rec map[string]string
			if json.Unmarshal(sc.Bytes(), &rec) != nil || rec["msg"] != "echo serving" {
				continue
			}
			addrs := map[string]string{}
			for _, k := range []string{"http", "grpc", "tcp"} {
				_, port, err := net.SplitHostPort(rec[k])
				if err != nil {
					t.Fatalf("start-up line %s: %v", sc.Text(), err)
				}
				addrs[k] = net.JoinHostPort("127.0.0.1", port)
			}
			return addrs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("server did not start; log:\n%s", log.String())
	return nil
}

func TestExitStatus(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name        string
		args        []string
		wantCode    int
		wantSummary bool
	}{
		{"unreachable target", []string{"client", "--url", "tcp://" + closed, "--count", "2"}, 1, true},
		{"no url", []string{"client"}, 2, false},
		{"unknown flag", []string{"client", "--url", "http://" + closed, "--bogus"}, 2, false},
		{"stray argument", []string{"client", "--url", "http://" + closed, "extra"}, 2, false},
		{"bad header", []string{"client", "--url", "http://" + closed, "--header", "no-colon"}, 2, false},
		{"bad count", []string{"client", "--url", "http://" + closed, "--count", "-1"}, 2, false},
		{"header for tcp", []string{"client", "--url", "tcp://" + closed, "--header", "a:b"}, 2, false},
		{"unknown command", []string{"bounce"}, 2, false},
		{"bad port", []string{"serve", "--http-port", "70000"}, 2, false},
		{"client help", []string{"client", "-h"}, 0, false},
		{"help", []string{"help"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d; stderr %q", tt.args, code, tt.wantCode, stderr.String())
			}
			var sum echo.Summary
			gotSummary := json.Unmarshal(stdout.Bytes(), &sum) == nil
			if gotSummary != tt.wantSummary {
				t.Errorf("run(%q) printed a summary: %v, want %v; stdout %q", tt.args, gotSummary, tt.wantSummary, stdout.String())
			}
			if tt.wantSummary && (sum.Total != 2 || sum.Errors != 2) {
				t.Errorf("summary total/errors = %d/%d, want 2/2", sum.Total, sum.Errors)
			}
		})
	}
}

func TestHeaderFlag(t *testing.T) {
	h := headerFlag{}
	for _, s := range []string{"X-A: one", "x-a:two", "Host:svc.ns:8080", "Empty:"} {
		if err := h.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	if got := h["X-A"]; len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("X-A = %q, want [one two]", got)
	}
	if got := h["Host"]; len(got) != 1 || got[0] != "svc.ns:8080" {
		t.Errorf("Host = %q, want [svc.ns:8080]: only the first colon splits", got)
	}
	if got, ok := h["Empty"]; !ok || got[0] != "" {
		t.Errorf("Empty = %q, want one empty value", got)
	}
	for _, bad := range []string{"nocolon", ":value", " : v"} {
		if err := h.Set(bad); err == nil {
			t.Errorf("Set(%q) succeeded, want an error", bad)
		}
	}
}
