package ca

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

// fakeAuth maps tokens to callers; "unavailable" fails like an unreachable
// API server.
type fakeAuth map[string]*Caller

func (f fakeAuth) Authenticate(_ context.Context, token string) (*Caller, error) {
	if token == "unavailable" {
		return nil, fmt.Errorf("%w: connection refused", ErrAuthUnavailable)
	}
	if c, ok := f[token]; ok {
		return c, nil
	}
	return nil, ErrTokenRejected
}

// fakePods is the cluster: pods by namespace/name, with their service
// account and node.
type fakePods map[string]struct{ sa, node, uid string }

func (f fakePods) ServiceAccountHasPodOnNode(ns, sa, node string) bool {
	for key, p := range f {
		if strings.HasPrefix(key, ns+"/") && p.sa == sa && p.node == node {
			return true
		}
	}
	return false
}

func (f fakePods) NodeOfPod(ns, name, uid string) (string, bool) {
	p, ok := f[ns+"/"+name]
	if !ok || (uid != "" && uid != p.uid) {
		return "", false
	}
	return p.node, true
}

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer serves srv on an in-memory listener and returns a client.
func startServer(t *testing.T, srv *Server) pb.IstioCertificateServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	srv.Register(g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///ca",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
		<-done
	})
	return pb.NewIstioCertificateServiceClient(conn)
}

func newTestServer(t *testing.T) (*Server, *syncBuffer) {
	t.Helper()
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	return &Server{
		Authority:   a,
		TrustDomain: "cluster.local",
		Authenticate: fakeAuth{
			"sleep-token": {Namespace: "default", ServiceAccount: "sleep", PodName: "sleep-1", PodUID: "u1", NodeName: "node-a"},
			// A ztunnel token that names its node, and one that names only its pod.
			"ztunnel-a":  {Namespace: "istio-system", ServiceAccount: "ztunnel", PodName: "ztunnel-a", PodUID: "za", NodeName: "node-a"},
			"ztunnel-b":  {Namespace: "istio-system", ServiceAccount: "ztunnel", PodName: "ztunnel-b", PodUID: "zb"},
			"ztunnel-x":  {Namespace: "istio-system", ServiceAccount: "ztunnel", PodName: "ztunnel-gone", PodUID: "zx"},
			"ztunnel-nx": {Namespace: "istio-system", ServiceAccount: "ztunnel"},
		},
		Pods: fakePods{
			"default/sleep-1":        {"sleep", "node-a", "u1"},
			"default/httpbin-1":      {"httpbin", "node-b", "u2"},
			"istio-system/ztunnel-a": {"ztunnel", "node-a", "za"},
			"istio-system/ztunnel-b": {"ztunnel", "node-b", "zb"},
		},
		TrustedNodeAccounts: []string{"istio-system/ztunnel"},
		Log:                 slog.New(slog.NewTextHandler(logs, nil)),
	}, logs
}

func TestCreateCertificate(t *testing.T) {
	srv, logs := newTestServer(t)
	client := startServer(t, srv)
	other := "spiffe://cluster.local/ns/kube-system/sa/admin"
	for _, tc := range []struct {
		name        string
		auth        string // authorization header; none if empty
		impersonate *structpb.Value
		csrURIs     []string
		want        spiffe.Identity
		code        codes.Code
		reason      string
		msg         []string // substrings of the error message
	}{
		{name: "own identity, ignoring the CSR's", auth: "Bearer sleep-token", csrURIs: []string{other}, want: sleepID},
		{name: "lower-case scheme", auth: "bearer sleep-token", want: sleepID},
		{name: "asking for itself is no impersonation", auth: "Bearer sleep-token", impersonate: structpb.NewStringValue(sleepID.String()), want: sleepID},
		{name: "node account, pod on its node", auth: "Bearer ztunnel-a", impersonate: structpb.NewStringValue(sleepID.String()), want: sleepID},
		{name: "node from the caller's pod", auth: "Bearer ztunnel-b", impersonate: structpb.NewStringValue(httpbinID.String()), want: httpbinID},
		{
			name: "node account, no pod on its node", auth: "Bearer ztunnel-a", impersonate: structpb.NewStringValue(httpbinID.String()),
			code: codes.PermissionDenied, reason: ReasonNoPodOnNode, msg: []string{httpbinID.String(), "node-a"},
		},
		{
			name: "node account, other trust domain", auth: "Bearer ztunnel-a", impersonate: structpb.NewStringValue("spiffe://evil.org/ns/default/sa/sleep"),
			code: codes.PermissionDenied, reason: ReasonTrustDomain, msg: []string{"evil.org"},
		},
		{
			name: "node account, malformed identity", auth: "Bearer ztunnel-a", impersonate: structpb.NewStringValue("spiffe://cluster.local/ns/default"),
			code: codes.InvalidArgument, reason: ReasonBadRequest,
		},
		{
			name: "node account, identity not a string", auth: "Bearer ztunnel-a", impersonate: structpb.NewNumberValue(1),
			code: codes.InvalidArgument, reason: ReasonBadRequest,
		},
		{
			name: "node account whose pod is gone", auth: "Bearer ztunnel-x", impersonate: structpb.NewStringValue(sleepID.String()),
			code: codes.PermissionDenied, reason: ReasonUnknownNode,
		},
		{
			name: "node account without pod or node", auth: "Bearer ztunnel-nx", impersonate: structpb.NewStringValue(sleepID.String()),
			code: codes.PermissionDenied, reason: ReasonUnknownNode,
		},
		{
			name: "workload may not impersonate", auth: "Bearer sleep-token", impersonate: structpb.NewStringValue(httpbinID.String()),
			code: codes.PermissionDenied, reason: ReasonNotNodeAccount, msg: []string{"default/sleep"},
		},
		{name: "no token", code: codes.Unauthenticated, reason: ReasonUnauthenticated},
		{name: "empty bearer", auth: "Bearer ", code: codes.Unauthenticated, reason: ReasonUnauthenticated},
		{name: "basic auth", auth: "Basic sleep-token", code: codes.Unauthenticated, reason: ReasonUnauthenticated},
		{name: "rejected token", auth: "Bearer forged", code: codes.Unauthenticated, reason: ReasonUnauthenticated},
		{name: "reviewer down", auth: "Bearer unavailable", code: codes.Unavailable, reason: ReasonAuthUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			if tc.auth != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.auth)
			}
			req := &pb.IstioCertificateRequest{Csr: string(csrPEM(t, newP256(t), tc.csrURIs...))}
			if tc.impersonate != nil {
				req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{ImpersonatedIdentityKey: tc.impersonate}}
			}
			before := srv.Stats()
			resp, err := client.CreateCertificate(ctx, req)
			after := srv.Stats()
			if tc.code != codes.OK {
				if status.Code(err) != tc.code {
					t.Fatalf("error %v, want code %v", err, tc.code)
				}
				for _, m := range tc.msg {
					if !strings.Contains(status.Convert(err).Message(), m) {
						t.Errorf("error %q does not mention %q", status.Convert(err).Message(), m)
					}
				}
				if after.Refused[tc.reason] != before.Refused[tc.reason]+1 {
					t.Errorf("refusals for %q went %d -> %d", tc.reason, before.Refused[tc.reason], after.Refused[tc.reason])
				}
				if !strings.Contains(logs.String(), "reason="+tc.reason) {
					t.Errorf("refusal not logged with reason %q", tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			onlyURI(t, parseChain(t, resp.CertChain, srv.Authority.RootPEM())[0], tc.want)
			if after.Issued != before.Issued+1 {
				t.Errorf("issued went %d -> %d", before.Issued, after.Issued)
			}
		})
	}
	if !strings.Contains(logs.String(), "caller=") {
		t.Error("refusals not logged with the caller")
	}
}

func TestCreateCertificateBadCSR(t *testing.T) {
	srv, _ := newTestServer(t)
	client := startServer(t, srv)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer sleep-token")
	for _, csr := range []string{"", "junk", string(csrPEM(t, newP256(t))) + "junk"} {
		_, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("CSR %q: error %v, want InvalidArgument", csr, err)
		}
	}
	if got := srv.Stats().Refused[ReasonBadCSR]; got != 3 {
		t.Errorf("bad CSR refusals = %d, want 3", got)
	}
}

func TestCreateCertificateTTL(t *testing.T) {
	srv, _ := newTestServer(t)
	srv.MaxTTL = 24 * time.Hour
	srv.DefaultTTL = 12 * time.Hour
	client := startServer(t, srv)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer sleep-token")
	for _, tc := range []struct {
		seconds int64
		want    time.Duration
	}{
		{0, 12 * time.Hour},
		{-5, 12 * time.Hour},
		{3600, time.Hour},
		{48 * 3600, 24 * time.Hour},
		{math.MaxInt64, 24 * time.Hour},
	} {
		start := time.Now().Truncate(time.Second)
		resp, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csrPEM(t, newP256(t))), ValidityDuration: tc.seconds})
		if err != nil {
			t.Fatal(err)
		}
		leaf := parseChain(t, resp.CertChain, srv.Authority.RootPEM())[0]
		if got := leaf.NotAfter.Sub(start); got < tc.want || got > tc.want+time.Minute {
			t.Errorf("validity %ds: leaf lives %v, want %v", tc.seconds, got, tc.want)
		}
	}
}

func TestServerTTLDefaults(t *testing.T) {
	var s Server
	for _, tc := range []struct {
		seconds int64
		want    time.Duration
	}{{0, DefaultTTL}, {60, time.Minute}, {1 << 40, DefaultTTL}} {
		if got := s.ttl(tc.seconds); got != tc.want {
			t.Errorf("ttl(%d) = %v, want %v", tc.seconds, got, tc.want)
		}
	}
	// A default above the cap is capped too.
	s = Server{MaxTTL: time.Hour, DefaultTTL: 2 * time.Hour}
	if got := s.ttl(0); got != time.Hour {
		t.Errorf("ttl(0) = %v with default above max, want 1h", got)
	}
}
