package echo

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func runClient(t *testing.T, cfg ClientConfig) *Summary {
	t.Helper()
	if cfg.Count == 0 {
		cfg.Count = 1
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ExpectStatus == 0 {
		cfg.ExpectStatus = http.StatusOK
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient(%+v): %v", cfg, err)
	}
	defer c.Close()
	return c.Run(context.Background())
}

func TestClientAgainstServer(t *testing.T) {
	ts := startServer(t, time.Second)
	headers := http.Header{"X-Test-Header": {"round-trip"}}
	tests := []struct {
		name        string
		url         string
		headers     http.Header
		wantProto   string
		wantHeader  string // header name as the server reports it
		wantMessage string
		wantMethod  string
		wantPath    string
		loggedAs    string
	}{
		{name: "http", url: "http://" + ts.HTTPAddr() + "/some/path", headers: headers,
			wantProto: ProtocolHTTP1, wantHeader: "X-Test-Header", wantMethod: "GET", wantPath: "/some/path", loggedAs: "http request"},
		{name: "h2c", url: "h2c://" + ts.HTTPAddr() + "/h2", headers: headers,
			wantProto: ProtocolHTTP2, wantHeader: "X-Test-Header", wantMethod: "GET", wantPath: "/h2", loggedAs: "http request"},
		{name: "grpc", url: "grpc://" + ts.GRPCAddr(), headers: headers,
			wantProto: ProtocolGRPC, wantHeader: "x-test-header", wantMessage: "hello grpc", wantMethod: "POST", wantPath: GRPCMethod, loggedAs: "grpc request"},
		{name: "tcp", url: "tcp://" + ts.TCPAddr(),
			wantProto: ProtocolTCP, wantMessage: "hello tcp\nsecond line", loggedAs: "tcp connection"},
	}
	const count = 6
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := runClient(t, ClientConfig{
				URL: tt.url, Count: count, Concurrency: 3, Headers: tt.headers, Message: tt.wantMessage,
			})
			if sum.Total != count || sum.OK != count || sum.Errors != 0 {
				t.Fatalf("total/ok/errors = %d/%d/%d, want %d/%d/0; errors: %q",
					sum.Total, sum.OK, sum.Errors, count, count, sum.ErrorSamples)
			}
			if sum.URL != tt.url || sum.Protocol != tt.name {
				t.Errorf("url, protocol = %q, %q; want %q, %q", sum.URL, sum.Protocol, tt.url, tt.name)
			}
			if got := sum.ByPod; len(got) != 1 || got[testID.Pod] != count {
				t.Errorf("byPod = %v, want {%s: %d}", got, testID.Pod, count)
			}
			if got := sum.ByVersion; len(got) != 1 || got[testID.Version] != count {
				t.Errorf("byVersion = %v, want {%s: %d}", got, testID.Version, count)
			}
			l := sum.LatencyMs
			if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
				t.Errorf("latency %+v is not positive and ordered", l)
			}
			f := sum.First
			if f == nil {
				t.Fatal("first reply is missing")
			}
			if f.Pod != testID.Pod || f.Namespace != testID.Namespace || f.Version != testID.Version {
				t.Errorf("identity = %s/%s/%s, want %s/%s/%s",
					f.Namespace, f.Pod, f.Version, testID.Namespace, testID.Pod, testID.Version)
			}
			if f.Protocol != tt.wantProto {
				t.Errorf("protocol = %q, want %q", f.Protocol, tt.wantProto)
			}
			// The server must report the client's own end of the connection.
			if f.ClientAddr == "" || f.ClientAddr != f.LocalAddr {
				t.Errorf("clientAddr = %q, but the client's address was %q", f.ClientAddr, f.LocalAddr)
			}
			if host, _, _ := net.SplitHostPort(f.ClientAddr); host != "127.0.0.1" {
				t.Errorf("clientAddr host = %q, want 127.0.0.1", host)
			}
			if tt.wantHeader != "" {
				if got := f.Headers[tt.wantHeader]; len(got) != 1 || got[0] != "round-trip" {
					t.Errorf("header %s = %q, want [round-trip]; all: %v", tt.wantHeader, got, f.Headers)
				}
			}
			if f.Message != tt.wantMessage {
				t.Errorf("message = %q, want %q", f.Message, tt.wantMessage)
			}
			if f.Method != tt.wantMethod || f.Path != tt.wantPath {
				t.Errorf("method, path = %q, %q; want %q, %q", f.Method, f.Path, tt.wantMethod, tt.wantPath)
			}
		})
	}

	// Every request dialled its own connection, so the server saw as many
	// client addresses as requests: what makes load balancing observable.
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	want := map[string]int{}
	for _, tt := range tests {
		want[tt.loggedAs] += count // http and h2c share a port and a log message
	}
	for msg, n := range want {
		if got := ts.log.distinctClients(t, msg); got != n {
			t.Errorf("%q: server saw %d client addresses, want %d", msg, got, n)
		}
	}
}

func TestClientKeepAliveReusesConnections(t *testing.T) {
	for _, scheme := range []string{SchemeHTTP, SchemeH2C, SchemeGRPC} {
		t.Run(scheme, func(t *testing.T) {
			ts := startServer(t, time.Second)
			addr, logged := ts.HTTPAddr(), "http request"
			if scheme == SchemeGRPC {
				addr, logged = ts.GRPCAddr(), "grpc request"
			}
			sum := runClient(t, ClientConfig{URL: scheme + "://" + addr, Count: 5, KeepAlive: true, Message: "m"})
			if sum.OK != 5 {
				t.Fatalf("ok = %d, want 5; errors: %q", sum.OK, sum.ErrorSamples)
			}
			if err := ts.stop(); err != nil {
				t.Fatalf("Serve: %v", err)
			}
			if got := ts.log.distinctClients(t, logged); got != 1 {
				t.Errorf("server saw %d client addresses, want 1 reused connection", got)
			}
		})
	}
}

func TestClientHostHeaderSetsAuthority(t *testing.T) {
	ts := startServer(t, time.Second)
	for _, url := range []string{"http://" + ts.HTTPAddr(), "h2c://" + ts.HTTPAddr(), "grpc://" + ts.GRPCAddr()} {
		sum := runClient(t, ClientConfig{URL: url, Headers: http.Header{"Host": {"echo.test-ns.svc"}}})
		if sum.First == nil {
			t.Fatalf("%s: no reply; errors: %q", url, sum.ErrorSamples)
		}
		if sum.First.Host != "echo.test-ns.svc" {
			t.Errorf("%s: host = %q, want echo.test-ns.svc", url, sum.First.Host)
		}
	}
}

func TestClientExpectStatus(t *testing.T) {
	ts := startServer(t, time.Second)
	tests := []struct {
		name   string
		url    string
		expect int
		wantOK bool
	}{
		{"default 200 matches", "http://" + ts.HTTPAddr() + "/", 200, true},
		{"503 is not the expected 200", "http://" + ts.HTTPAddr() + "/?status=503", 200, false},
		{"h2c 503 is not the expected 200", "h2c://" + ts.HTTPAddr() + "/?status=503", 200, false},
		{"expected 503", "http://" + ts.HTTPAddr() + "/?status=503", 503, true},
		{"200 is not the expected 503", "h2c://" + ts.HTTPAddr() + "/", 503, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := runClient(t, ClientConfig{URL: tt.url, Count: 3, ExpectStatus: tt.expect})
			if tt.wantOK {
				if sum.OK != 3 || sum.ByPod[testID.Pod] != 3 {
					t.Errorf("ok = %d, byPod = %v; want all 3 from %s; errors %q", sum.OK, sum.ByPod, testID.Pod, sum.ErrorSamples)
				}
				return
			}
			if sum.Errors != 3 || sum.OK != 0 || sum.First != nil || len(sum.ByPod) != 0 {
				t.Errorf("errors = %d, ok = %d, first = %v, byPod = %v; want 3 errors and nothing else",
					sum.Errors, sum.OK, sum.First, sum.ByPod)
			}
			if len(sum.ErrorSamples) != 1 || !strings.Contains(sum.ErrorSamples[0], "unexpected status") {
				t.Errorf("errorSamples = %q, want one unexpected status", sum.ErrorSamples)
			}
		})
	}
}

// A status the test expects may come from a proxy, not from echo; its body
// is not a reply and must not turn an expected answer into an error.
func TestClientExpectedStatusFromProxy(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "fault filter abort", http.StatusServiceUnavailable)
	}))
	defer proxy.Close()
	sum := runClient(t, ClientConfig{URL: proxy.URL, Count: 2, ExpectStatus: http.StatusServiceUnavailable})
	if sum.OK != 2 || len(sum.ByPod) != 0 {
		t.Errorf("ok = %d, byPod = %v; want 2 ok naming no pod; errors %q", sum.OK, sum.ByPod, sum.ErrorSamples)
	}

	// A 200 that is not an echo reply is an error, though.
	notEcho := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<html>not echo</html>")
	}))
	defer notEcho.Close()
	sum = runClient(t, ClientConfig{URL: notEcho.URL})
	if sum.Errors != 1 || !strings.Contains(sum.ErrorSamples[0], "decode reply") {
		t.Errorf("errors = %d, samples %q; want 1 decode error", sum.Errors, sum.ErrorSamples)
	}
}

func TestClientUnreachable(t *testing.T) {
	addr := closedAddr(t)
	for _, scheme := range []string{SchemeHTTP, SchemeH2C, SchemeGRPC, SchemeTCP} {
		t.Run(scheme, func(t *testing.T) {
			sum := runClient(t, ClientConfig{URL: scheme + "://" + addr, Count: 7, Concurrency: 2, Timeout: 2 * time.Second})
			if sum.Total != 7 || sum.Errors != 7 || sum.OK != 0 || sum.First != nil {
				t.Errorf("total/ok/errors = %d/%d/%d, first = %v; want 7/0/7 and no reply",
					sum.Total, sum.OK, sum.Errors, sum.First)
			}
			if n := len(sum.ErrorSamples); n < 1 || n > maxErrorSamples {
				t.Fatalf("errorSamples has %d entries, want 1..%d", n, maxErrorSamples)
			}
			if !strings.Contains(sum.ErrorSamples[0], "refused") {
				t.Errorf("errorSamples = %q, want connection refused", sum.ErrorSamples)
			}
		})
	}
}

func TestClientTimeout(t *testing.T) {
	ts := startServer(t, time.Second)
	start := time.Now()
	sum := runClient(t, ClientConfig{URL: "http://" + ts.HTTPAddr() + "/?delay=10s", Count: 2, Concurrency: 2, Timeout: 200 * time.Millisecond})
	if sum.Errors != 2 {
		t.Errorf("errors = %d, want 2 timeouts", sum.Errors)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("client took %s, want about the 200ms timeout", d)
	}
}

// fakeTCP serves one canned exchange per connection, to check that the
// client notices a server that does not behave like echo.
func fakeTCP(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestClientTCPDetectsBadEcho(t *testing.T) {
	tests := []struct {
		name    string
		serve   func(net.Conn)
		wantErr string
	}{
		{"altered echo", func(c net.Conn) {
			fmt.Fprintf(c, "pod=p namespace=n version=v client=%s\n", c.RemoteAddr())
			buf := make([]byte, 5)
			c.Read(buf)
			c.Write([]byte(strings.ToUpper(string(buf))))
		}, `echoed "HELLO", sent "hello"`},
		{"no greeting", func(c net.Conn) {
			fmt.Fprint(c, "hello there\n")
		}, "not key=value"},
		{"closed early", func(c net.Conn) {
			fmt.Fprintf(c, "pod=p namespace=n version=v client=%s\n", c.RemoteAddr())
		}, "read echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeTCP(t, tt.serve)
			sum := runClient(t, ClientConfig{URL: "tcp://" + addr, Message: "hello", Timeout: 2 * time.Second})
			if sum.Errors != 1 || len(sum.ErrorSamples) != 1 || !strings.Contains(sum.ErrorSamples[0], tt.wantErr) {
				t.Errorf("errors = %d, samples = %q; want one containing %q", sum.Errors, sum.ErrorSamples, tt.wantErr)
			}
		})
	}
}

func TestNewClientRejectsBadConfig(t *testing.T) {
	good := ClientConfig{URL: "http://127.0.0.1:1/", Count: 1, Concurrency: 1, Timeout: time.Second, ExpectStatus: 200}
	tests := []struct {
		name   string
		change func(*ClientConfig)
	}{
		{"no url", func(c *ClientConfig) { c.URL = "" }},
		{"unknown scheme", func(c *ClientConfig) { c.URL = "ftp://127.0.0.1:1" }},
		{"no host", func(c *ClientConfig) { c.URL = "http:///path" }},
		{"tcp without port", func(c *ClientConfig) { c.URL = "tcp://127.0.0.1" }},
		{"grpc without port", func(c *ClientConfig) { c.URL = "grpc://127.0.0.1" }},
		{"grpc with path", func(c *ClientConfig) { c.URL = "grpc://127.0.0.1:1/x" }},
		{"tcp with headers", func(c *ClientConfig) {
			c.URL = "tcp://127.0.0.1:1"
			c.Headers = http.Header{"X": {"y"}}
		}},
		{"zero count", func(c *ClientConfig) { c.Count = 0 }},
		{"zero concurrency", func(c *ClientConfig) { c.Concurrency = 0 }},
		{"zero timeout", func(c *ClientConfig) { c.Timeout = 0 }},
		{"bad expected status", func(c *ClientConfig) { c.ExpectStatus = 42 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			if c, err := NewClient(cfg); err == nil {
				c.Close()
				t.Errorf("NewClient(%+v) succeeded, want an error", cfg)
			}
		})
	}
	c, err := NewClient(good)
	if err != nil {
		t.Fatalf("NewClient(%+v): %v", good, err)
	}
	c.Close()
}
