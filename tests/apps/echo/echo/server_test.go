package echo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestHTTPReplyReportsTheRequest(t *testing.T) {
	ts := startServer(t, time.Second)
	// An unclean path must be reported as sent, not redirected.
	req, err := http.NewRequest(http.MethodPost, "http://"+ts.HTTPAddr()+"/a//b/../c?x=1", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	req.Host = "echo.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q; want 200 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var r Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	want := Reply{
		Pod: testID.Pod, Namespace: testID.Namespace, Version: testID.Version,
		Protocol: ProtocolHTTP1, Method: http.MethodPost, Host: "echo.example", Path: "/a//b/../c",
	}
	got := r
	got.ClientAddr, got.Headers = "", nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reply = %+v\nwant    %+v", got, want)
	}
	if m := r.Headers["X-Multi"]; len(m) != 2 || m[0] != "one" || m[1] != "two" {
		t.Errorf("X-Multi = %q, want [one two]", m)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	logged := ts.log.lines(t, "http request")
	if len(logged) != 1 || logged[0]["client"] != r.ClientAddr || logged[0]["path"] != "/a//b/../c" {
		t.Errorf("log lines = %v, want one for client %s", logged, r.ClientAddr)
	}
}

func TestHTTPQueryKnobs(t *testing.T) {
	ts := startServer(t, time.Second)
	tests := []struct {
		query      string
		wantStatus int
		wantBody   string // substring
		minTime    time.Duration
	}{
		{"", 200, `"pod":"echo-v1-abc"`, 0},
		{"status=418", 418, `"pod":"echo-v1-abc"`, 0},
		{"status=503&delay=100ms", 503, `"pod":"echo-v1-abc"`, 100 * time.Millisecond},
		{"status=204", 204, "", 0},
		{"status=100", 400, "want an integer in 200..599", 0},
		{"status=600", 400, "want an integer in 200..599", 0},
		{"status=abc", 400, "want an integer", 0},
		{"delay=31s", 400, "want a duration in 0..30s", 0},
		{"delay=-1s", 400, "want a duration", 0},
		{"delay=soon", 400, "want a duration", 0},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			start := time.Now()
			resp, err := http.Get("http://" + ts.HTTPAddr() + "/?" + tt.query)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body = %q, want it to contain %q", body, tt.wantBody)
			}
			if d := time.Since(start); d < tt.minTime {
				t.Errorf("answered after %s, want at least %s", d, tt.minTime)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	ts := startServer(t, time.Second)
	resp, err := http.Get("http://" + ts.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("healthz = %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
}

// net/http serves h2c with prior knowledge only; a client asking to upgrade
// must still get its answer, over HTTP/1.1.
func TestH2CUpgradeRequestIsAnsweredOverHTTP1(t *testing.T) {
	ts := startServer(t, time.Second)
	c, err := net.Dial("tcp", ts.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /up HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || r.Protocol != ProtocolHTTP1 || r.Path != "/up" {
		t.Errorf("status %d, protocol %q, path %q; want 200 HTTP/1.1 /up", resp.StatusCode, r.Protocol, r.Path)
	}
}

func TestGRPCHealth(t *testing.T) {
	ts := startServer(t, time.Second)
	conn, err := grpc.NewClient("passthrough:///"+ts.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, service := range []string{"", GRPCService} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health check %q: %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, want SERVING", service, resp.GetStatus())
		}
	}
}

func TestTCPGreetsThenEchoesUntilEOF(t *testing.T) {
	ts := startServer(t, time.Second)
	c, err := net.Dial("tcp", ts.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("pod=%s namespace=%s version=%s client=%s\n", testID.Pod, testID.Namespace, testID.Version, c.LocalAddr())
	if greeting != want {
		t.Errorf("greeting = %q, want %q", greeting, want)
	}
	sent := []string{"first chunk\n", "second\x00binary\xff", strings.Repeat("x", 100<<10)}
	for _, s := range sent {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	// After our EOF the server must send back everything, then close.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.Join(sent, "") {
		t.Errorf("echoed %d bytes, want the %d sent, unchanged", len(got), len(strings.Join(sent, "")))
	}
}

func TestServeDrainsThenClosesOnCancel(t *testing.T) {
	const drain = 500 * time.Millisecond
	ts := startServer(t, drain)

	// A request in flight when the server is told to stop still gets its
	// answer.
	type answer struct {
		status int
		err    error
	}
	answered := make(chan answer, 1)
	wrote := make(chan struct{})
	go func() {
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { close(wrote) },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ts.HTTPAddr()+"/?delay=300ms", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		resp.Body.Close()
		answered <- answer{status: resp.StatusCode}
	}()
	// An idle TCP client holds its connection past the drain timeout and
	// is cut off.
	idle, err := net.Dial("tcp", ts.TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := bufio.NewReader(idle).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	<-wrote
	// Nothing outside the handler shows that the server has read the
	// request; give it a moment, well inside the 300ms delay.
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d < drain || d > drain+2*time.Second {
		t.Errorf("Serve returned %s after cancel, want just past the %s drain", d, drain)
	}
	if a := <-answered; a.err != nil || a.status != http.StatusOK {
		t.Errorf("in-flight request: status %d, error %v; want 200", a.status, a.err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle tcp read after shutdown: %v, want EOF", err)
	}
	// Nothing listens any more.
	for _, addr := range []string{ts.HTTPAddr(), ts.GRPCAddr(), ts.TCPAddr()} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections", addr)
		}
	}
}

func TestListenReportsPortConflict(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	httpAddr := closedAddr(t)
	_, err = Listen(Config{HTTPAddr: httpAddr, GRPCAddr: taken.Addr().String(), TCPAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "listen grpc") {
		t.Fatalf("Listen with a taken gRPC port: %v, want a listen grpc error", err)
	}
	// The HTTP listener opened before the failure must have been released.
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatalf("http port still held after failed Listen: %v", err)
	}
	ln.Close()
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		query      string
		wantStatus int
		wantDelay  time.Duration
		wantErr    bool
	}{
		{"", 200, 0, false},
		{"status=201", 201, 0, false},
		{"status=599&delay=30s", 599, 30 * time.Second, false},
		{"delay=0s", 200, 0, false},
		{"status=199", 0, 0, true},
		{"status=2e2", 0, 0, true},
		{"delay=30.001s", 0, 0, true},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		status, delay, err := parseQuery(q)
		if (err != nil) != tt.wantErr || status != tt.wantStatus || delay != tt.wantDelay {
			t.Errorf("parseQuery(%q) = %d, %s, %v; want %d, %s, error %v",
				tt.query, status, delay, err, tt.wantStatus, tt.wantDelay, tt.wantErr)
		}
	}
}
