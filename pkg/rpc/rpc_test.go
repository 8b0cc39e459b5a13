package rpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/spiffe/spiffetest"
)

// The tests run against grpc-go's server, the one istiod runs, through a
// handler that serves any method:
//
//	/test.Echo/Unary   answers the request with fields about the call
//	/test.Echo/Stream  echoes every message, then ends as "end" says
//	/test.Echo/Fail    ends with the status the request names
func serve(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, grpc.UnknownServiceHandler(handle))
	gs := grpc.NewServer(opts...)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	switch method {
	case "/test.Echo/Unary":
		req := &structpb.Struct{}
		if err := ss.RecvMsg(req); err != nil {
			return err
		}
		resp := map[string]any{"echo": req.AsMap(), "authorization": strings.Join(md.Get("authorization"), ",")}
		if d, ok := ss.Context().Deadline(); ok {
			resp["deadline_in_s"] = time.Until(d).Round(time.Second).Seconds()
		}
		if n, ok := req.AsMap()["pad"].(float64); ok {
			resp["padding"] = strings.Repeat("x", int(n))
		}
		out, err := structpb.NewStruct(resp)
		if err != nil {
			return err
		}
		return ss.SendMsg(out)
	case "/test.Echo/Stream":
		var end string
		for {
			m := &structpb.Struct{}
			if err := ss.RecvMsg(m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return err
			}
			if e, ok := m.AsMap()["end"].(string); ok {
				end = e
				break
			}
			if err := ss.SendMsg(m); err != nil {
				return err
			}
		}
		if end == "" || end == "ok" {
			return nil
		}
		return status.Error(codes.FailedPrecondition, end)
	case "/test.Echo/Hold":
		// Answers nothing, not even headers, until the client leaves.
		<-ss.Context().Done()
		return ss.Context().Err()
	case "/test.Echo/Fail":
		req := &structpb.Struct{}
		if err := ss.RecvMsg(req); err != nil {
			return err
		}
		m := req.AsMap()
		return status.Error(codes.Code(m["code"].(float64)), m["message"].(string))
	}
	return status.Error(codes.Unimplemented, "unknown method "+method)
}

func msg(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUnaryCarriesMessageMetadataAndDeadline(t *testing.T) {
	c := Dial(serve(t), Options{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := &structpb.Struct{}
	err := c.Invoke(ctx, "/test.Echo/Unary", Metadata{"authorization": "Bearer abc"}, msg(t, map[string]any{"hello": "world"}), resp)
	if err != nil {
		t.Fatal(err)
	}
	got := resp.AsMap()
	if got["echo"].(map[string]any)["hello"] != "world" {
		t.Errorf("echo = %v", got["echo"])
	}
	if got["authorization"] != "Bearer abc" {
		t.Errorf("server saw authorization %q", got["authorization"])
	}
	if d, _ := got["deadline_in_s"].(float64); d < 29 || d > 30 {
		t.Errorf("server saw a deadline in %vs, want 30s", got["deadline_in_s"])
	}
}

func TestUnaryStatus(t *testing.T) {
	c := Dial(serve(t), Options{})
	defer c.Close()
	ctx := context.Background()
	err := c.Invoke(ctx, "/test.Echo/Fail", nil, msg(t, map[string]any{"code": 7, "message": "not you: 100% sure, ünïcode"}), &structpb.Struct{})
	var st *Status
	if !errors.As(err, &st) || st.Code != PermissionDenied || st.Message != "not you: 100% sure, ünïcode" {
		t.Fatalf("err = %v, want PermissionDenied with the message as sent", err)
	}
	if CodeOf(err) != PermissionDenied {
		t.Errorf("CodeOf = %v", CodeOf(err))
	}
	err = c.Invoke(ctx, "/test.Missing/Method", nil, msg(t, nil), &structpb.Struct{})
	if CodeOf(err) != Unimplemented {
		t.Errorf("unknown method: err = %v, want Unimplemented", err)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	c := Dial(serve(t), Options{MaxRecvSize: 64 << 10})
	defer c.Close()
	ctx := context.Background()
	if err := c.Invoke(ctx, "/test.Echo/Unary", nil, msg(t, map[string]any{"pad": 32 << 10}), &structpb.Struct{}); err != nil {
		t.Fatalf("32 KiB under a 64 KiB limit: %v", err)
	}
	err := c.Invoke(ctx, "/test.Echo/Unary", nil, msg(t, map[string]any{"pad": 128 << 10}), &structpb.Struct{})
	if CodeOf(err) != ResourceExhausted {
		t.Fatalf("128 KiB over a 64 KiB limit: err = %v, want ResourceExhausted", err)
	}
}

func TestStream(t *testing.T) {
	c := Dial(serve(t), Options{})
	defer c.Close()
	for _, tc := range []struct {
		end  string
		want error
	}{
		{"ok", io.EOF},
		{"gone wrong", &Status{Code: FailedPrecondition, Message: "gone wrong"}},
	} {
		t.Run(tc.end, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := c.NewStream(ctx, "/test.Echo/Stream", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 50 {
				if err := s.Send(msg(t, map[string]any{"i": i})); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				m := &structpb.Struct{}
				if err := s.Recv(m); err != nil {
					t.Fatalf("recv %d: %v", i, err)
				}
				if got := m.AsMap()["i"]; got != float64(i) {
					t.Fatalf("recv %d: got %v", i, got)
				}
			}
			if err := s.Send(msg(t, map[string]any{"end": tc.end})); err != nil {
				t.Fatal(err)
			}
			err = s.Recv(&structpb.Struct{})
			if st, ok := tc.want.(*Status); ok {
				var got *Status
				if !errors.As(err, &got) || *got != *st {
					t.Fatalf("end: err = %v, want %v", err, st)
				}
			} else if !errors.Is(err, tc.want) {
				t.Fatalf("end: err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStreamCancel(t *testing.T) {
	c := Dial(serve(t), Options{})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.NewStream(ctx, "/test.Echo/Stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(msg(t, map[string]any{"i": 1})); err != nil {
		t.Fatal(err)
	}
	if err := s.Recv(&structpb.Struct{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Recv(&structpb.Struct{}) }()
	cancel()
	select {
	case err := <-errc:
		if CodeOf(err) != Canceled {
			t.Fatalf("Recv after cancel: %v, want Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv still blocked 10s after the context was cancelled")
	}
	if err := s.Send(msg(t, nil)); CodeOf(err) != Canceled {
		t.Fatalf("Send after cancel: %v, want Canceled", err)
	}
}

// TestServerGone checks that a call to an address nobody serves fails as
// Unavailable, which is what makes callers retry.
func TestServerGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := Dial(addr, Options{})
	defer c.Close()
	err = c.Invoke(context.Background(), "/test.Echo/Unary", nil, msg(t, nil), &structpb.Struct{})
	if CodeOf(err) != Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	s, err := c.NewStream(context.Background(), "/test.Echo/Stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Send must not wait for a reader that never comes.
	if err := s.Send(msg(t, nil)); CodeOf(err) != Unavailable {
		t.Fatalf("stream send: err = %v, want Unavailable", err)
	}
	if err := s.Recv(&structpb.Struct{}); CodeOf(err) != Unavailable {
		t.Fatalf("stream: err = %v, want Unavailable", err)
	}
}

func TestTLS(t *testing.T) {
	ca := spiffetest.NewCA(t)
	srvCert := ca.Issue(t, spiffe.Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "istiod"}, time.Hour)
	addr := serve(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvCert}})))
	good := Dial(addr, Options{TLS: &tls.Config{RootCAs: ca.Pool, InsecureSkipVerify: true, VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
		_, err := spiffe.VerifyPeer(raw, ca.Pool, "cluster.local")
		return err
	}}})
	defer good.Close()
	if err := good.Invoke(context.Background(), "/test.Echo/Unary", nil, msg(t, nil), &structpb.Struct{}); err != nil {
		t.Fatalf("with the right root: %v", err)
	}
	other := spiffetest.NewCA(t)
	bad := Dial(addr, Options{TLS: &tls.Config{RootCAs: other.Pool, ServerName: "istiod.istio-system.svc"}})
	defer bad.Close()
	err := bad.Invoke(context.Background(), "/test.Echo/Unary", nil, msg(t, nil), &structpb.Struct{})
	if CodeOf(err) != Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with another root: err = %v, want Unavailable naming the certificate", err)
	}
}

func TestEncodeTimeout(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:           "1n",
		1500 * time.Nanosecond: "1500n",
		30 * time.Second:       "30000000u",
		3 * time.Minute:        "180000m",
		1000 * time.Hour:       "3600000S",
		2000 * 24 * time.Hour:  "2880000M",
	} {
		if got := encodeTimeout(d); got != want {
			t.Errorf("encodeTimeout(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestUnixSocket(t *testing.T) {
	path := t.TempDir() + "/istiod.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(handle))
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	for _, target := range []string{"unix://" + path, "unix:" + path} {
		c := Dial(target, Options{})
		if err := c.Invoke(context.Background(), "/test.Echo/Unary", nil, msg(t, map[string]any{"a": "b"}), &structpb.Struct{}); err != nil {
			t.Errorf("%s: %v", target, err)
		}
		c.Close()
	}
}

// TestHeadersOnlyOK: a server that ends a call with OK and no message
// gives a stream a clean end, and a unary call an error, never an empty
// message taken for a real one.
func TestHeadersOnlyOK(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error { return nil }))
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	c := Dial(ln.Addr().String(), Options{})
	defer c.Close()
	if err := c.Invoke(context.Background(), "/test.Echo/Unary", nil, msg(t, nil), &structpb.Struct{}); CodeOf(err) != Internal {
		t.Errorf("unary: err = %v, want Internal", err)
	}
	s, err := c.NewStream(context.Background(), "/test.Echo/Stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Recv(&structpb.Struct{}); !errors.Is(err, io.EOF) {
		t.Errorf("stream: err = %v, want io.EOF", err)
	}
}

// TestSendAfterServerEnded: once the server ended a call, Send says
// io.EOF and Recv gives the status.
func TestSendAfterServerEnded(t *testing.T) {
	c := Dial(serve(t), Options{})
	defer c.Close()
	s, err := c.NewStream(context.Background(), "/test.Echo/Fail", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(msg(t, map[string]any{"code": 16, "message": "who are you"})); err != nil {
		t.Fatal(err)
	}
	err = s.Recv(&structpb.Struct{})
	if CodeOf(err) != Unauthenticated {
		t.Fatalf("Recv: %v, want Unauthenticated", err)
	}
	// The transport may go on taking the request body for a while; Send
	// must not wait for it to stop.
	if err := s.Send(msg(t, nil)); !errors.Is(err, io.EOF) {
		t.Fatalf("Send after the end: %v, want io.EOF", err)
	}
}

// TestSendAfterCloseSend: Send after CloseSend fails at once, even while
// the server has not answered yet.
func TestSendAfterCloseSend(t *testing.T) {
	c := Dial(serve(t), Options{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.NewStream(ctx, "/test.Echo/Hold", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(msg(t, nil)); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(msg(t, nil)); !errors.Is(err, errSendClosed) {
		t.Fatalf("Send after CloseSend: %v, want %v", err, errSendClosed)
	}
}

// TestSilentServer: a server that accepts connections and never answers
// fails the call within the handshake bound instead of holding it.
func TestSilentServer(t *testing.T) {
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
			defer c.Close()
		}
	}()
	c := Dial(ln.Addr().String(), Options{TLS: &tls.Config{InsecureSkipVerify: true}})
	defer c.Close()
	start := time.Now()
	err = c.Invoke(context.Background(), "/test.Echo/Unary", nil, msg(t, nil), &structpb.Struct{})
	if CodeOf(err) != Unavailable || time.Since(start) > handshakeTimeout+5*time.Second {
		t.Fatalf("after %v: err = %v, want Unavailable within about %v", time.Since(start), err, handshakeTimeout)
	}
}
