package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/pkg/caapi"
	"github.com/ambient-mesh/mesh/pkg/rpc"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/spiffe/spiffetest"
)

// testCA is a real CreateCertificate server signing with a test root.
type testCA struct {
	pb.UnimplementedIstioCertificateServiceServer
	root  *spiffetest.CA
	token string
	ttl   time.Duration

	mu       sync.Mutex
	calls    int
	failing  bool
	issueFor string // when set, sign for this identity instead
}

func (s *testCA) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	s.mu.Lock()
	s.calls++
	failing, issueFor, ttl := s.failing, s.issueFor, s.ttl
	s.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) != 1 || auth[0] != "Bearer "+s.token {
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	if failing {
		return nil, status.Error(codes.Unavailable, "CA is down")
	}
	b, _ := pem.Decode([]byte(req.GetCsr()))
	if b == nil {
		return nil, status.Error(codes.InvalidArgument, "csr is not PEM")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil, status.Error(codes.InvalidArgument, "bad csr")
	}
	id := req.GetMetadata().GetFields()[caapi.ImpersonatedIdentity].GetStringValue()
	if issueFor != "" {
		id = issueFor
	}
	if req.GetValidityDuration() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "no validity")
	}
	u, _ := url.Parse(id)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: now, NotAfter: now.Add(ttl), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.root.Cert, csr.PublicKey, s.root.Key)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaf := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	root := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.root.Cert.Raw}))
	return &pb.IstioCertificateResponse{CertChain: []string{leaf, root}}, nil
}

func (s *testCA) callCount() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

var workload = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "echo"}

// setup starts the CA server and a manager talking to it.
func setup(t *testing.T, ttl time.Duration, token string) (*testCA, *Manager) {
	t.Helper()
	srv := &testCA{root: spiffetest.NewCA(t), token: "node-token", ttl: ttl}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterIstioCertificateServiceServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	cc := rpc.Dial(ln.Addr().String(), rpc.Options{})
	t.Cleanup(func() { cc.Close() })
	m := NewManager(NewClient(cc, func() (string, error) { return token, nil }, ttl), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(m.Close)
	return srv, m
}

// eventually waits for cond with a deadline; a condition, never a sleep.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIssuesTheImpersonatedIdentity(t *testing.T) {
	srv, m := setup(t, time.Hour, "node-token")
	cert, err := m.Get(context.Background(), workload)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := spiffe.FromCertificate(cert.Leaf); got != workload {
		t.Fatalf("certificate for %v, want %v", got, workload)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: srv.root.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("chain does not verify against the mesh root: %v", err)
	}
	if !cert.Roots.Equal(srv.root.Pool) {
		t.Error("roots differ from the CA's")
	}
	if len(cert.TLS.Certificate) != 1 || cert.TLS.PrivateKey == nil {
		t.Errorf("TLS certificate: %d certs, key %v", len(cert.TLS.Certificate), cert.TLS.PrivateKey != nil)
	}
}

func TestConcurrentRequestsShareOneFetch(t *testing.T) {
	srv, m := setup(t, time.Hour, "node-token")
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Get(context.Background(), workload); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := srv.callCount(); n != 1 {
		t.Fatalf("%d CA calls for one identity, want 1", n)
	}
}

func TestRenewsAtHalfLifeAndKeepsServingThroughFailures(t *testing.T) {
	srv, m := setup(t, 4*time.Second, "node-token")
	first, err := m.Get(context.Background(), workload)
	if err != nil {
		t.Fatal(err)
	}
	// The CA goes down: renewal at half-life fails, and the old, still
	// valid certificate is served.
	srv.mu.Lock()
	srv.failing = true
	srv.mu.Unlock()
	eventually(t, "a renewal was attempted", func() bool { return srv.callCount() >= 2 })
	if got, err := m.Get(context.Background(), workload); err != nil || got != first {
		t.Fatalf("during CA outage: %v, %v; want the first certificate", got, err)
	}
	if since := time.Since(first.Leaf.NotBefore); since < 2*time.Second-100*time.Millisecond {
		t.Errorf("renewal tried %s after issue, before half-life", since)
	}
	// The CA is back: a retry with backoff brings a new certificate.
	srv.mu.Lock()
	srv.failing = false
	srv.mu.Unlock()
	eventually(t, "a new certificate replaced the old", func() bool {
		got, err := m.Get(context.Background(), workload)
		return err == nil && got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0
	})
}

func TestRefusals(t *testing.T) {
	t.Run("wrong token", func(t *testing.T) {
		_, m := setup(t, time.Hour, "forged")
		_, err := m.Get(context.Background(), workload)
		if rpc.CodeOf(err) != rpc.Unauthenticated {
			t.Fatalf("Get: %v, want Unauthenticated", err)
		}
	})
	t.Run("chain for another identity", func(t *testing.T) {
		srv, m := setup(t, time.Hour, "node-token")
		srv.issueFor = "spiffe://cluster.local/ns/default/sa/someone-else"
		_, err := m.Get(context.Background(), workload)
		if !errors.Is(err, ErrBadChain) {
			t.Fatalf("Get: %v, want ErrBadChain", err)
		}
	})
}
