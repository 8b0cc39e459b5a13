package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "s3cret-token"

func newServer(t *testing.T) (*Server, *Authority, string) {
	t.Helper()
	ca, err := NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Authority: ca, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "istiod.sock")
	if err := s.Start(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, ca, path
}

// dial connects the way ztunnel does: TLS verified against the root, for
// istiod's name.
func dial(t *testing.T, ca *Authority, path string) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.RootPool(), ServerName: DefaultServerName})
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

type adsClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
}

// subscribe opens a stream and subscribes to both types, Address first,
// as ztunnel does.
func subscribe(t *testing.T, cc *grpc.ClientConn, node string, initial map[string]string) *adsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, cancel: cancel}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType, Node: &corev3.Node{Id: node}, InitialResourceVersions: initial})
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: AuthorizationType})
	return c
}

func (c *adsClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *adsClient) recv(typeURL string) *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	if resp.GetTypeUrl() != typeURL {
		c.t.Fatalf("got a %s response, want %s: %v", resp.GetTypeUrl(), typeURL, resp)
	}
	if resp.GetNonce() == "" {
		c.t.Fatal("response without a nonce")
	}
	return resp
}

func (c *adsClient) ack(resp *discovery.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
}

func names(resp *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName()+"@"+r.GetVersion())
	}
	return out
}

func workloadOf(t *testing.T, r *discovery.Resource) *workloadapi.Workload {
	t.Helper()
	var addr workloadapi.Address
	if err := r.GetResource().UnmarshalTo(&addr); err != nil {
		t.Fatalf("%s: %v", r.GetName(), err)
	}
	return addr.GetWorkload()
}

func ip(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestADS(t *testing.T) {
	s, ca, path := newServer(t)
	s.SetWorkload(&workloadapi.Workload{Uid: "uid-a", Name: "a", Namespace: "default", Addresses: [][]byte{ip("10.0.0.1")}})
	s.SetService(&workloadapi.Service{Name: "svc", Namespace: "default", Hostname: "svc.default.svc.cluster.local"})
	s.SetAuthorization(&security.Authorization{Name: "deny", Namespace: "default", Action: security.Action_DENY})

	c := subscribe(t, dial(t, ca, path), "node-a", nil)
	addrs := c.recv(AddressType)
	if got, want := names(addrs), []string{"default/svc.default.svc.cluster.local@2", "uid-a@1"}; !slices.Equal(got, want) {
		t.Fatalf("initial addresses %v, want %v", got, want)
	}
	if w := workloadOf(t, addrs.GetResources()[1]); w.GetName() != "a" || !slices.Equal(w.GetAddresses()[0], ip("10.0.0.1")) {
		t.Fatalf("workload body %v", w)
	}
	if addrs.GetSystemVersionInfo() != "3" {
		t.Fatalf("system_version_info %q, want 3", addrs.GetSystemVersionInfo())
	}
	authz := c.recv(AuthorizationType)
	if got, want := names(authz), []string{"default/deny@3"}; !slices.Equal(got, want) {
		t.Fatalf("initial policies %v, want %v", got, want)
	}
	var p security.Authorization
	if err := authz.GetResources()[0].GetResource().UnmarshalTo(&p); err != nil || p.GetAction() != security.Action_DENY {
		t.Fatalf("policy body %v, %v", &p, err)
	}
	if addrs.GetNonce() == authz.GetNonce() {
		t.Fatalf("two responses share nonce %q", addrs.GetNonce())
	}

	// Not synced until both types are ACKed.
	c.ack(addrs)
	if err := s.WaitAcked(shortCtx(t), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitAcked with the policies un-ACKed: %v", err)
	}
	c.ack(authz)
	if err := s.WaitAcked(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if n := s.Connected(); n != 1 {
		t.Fatalf("Connected %d, want 1", n)
	}

	// A change is pushed as a delta of just that resource.
	s.SetWorkload(&workloadapi.Workload{Uid: "uid-a", Name: "a", Namespace: "default", Addresses: [][]byte{ip("10.0.0.9")}})
	d := c.recv(AddressType)
	if got := names(d); !slices.Equal(got, []string{"uid-a@4"}) || len(d.GetRemovedResources()) != 0 {
		t.Fatalf("change delta %v removed %v", got, d.GetRemovedResources())
	}
	if w := workloadOf(t, d.GetResources()[0]); !slices.Equal(w.GetAddresses()[0], ip("10.0.0.9")) {
		t.Fatalf("changed workload %v", w)
	}
	c.ack(d)
	s.RemoveAddress("default/svc.default.svc.cluster.local")
	d = c.recv(AddressType)
	if len(d.GetResources()) != 0 || !slices.Equal(d.GetRemovedResources(), []string{"default/svc.default.svc.cluster.local"}) {
		t.Fatalf("removal delta %v", d)
	}
	c.ack(d)
	// Removing what does not exist pushes nothing: the next response is
	// the policy.
	s.RemoveAddress("no-such")
	s.SetAuthorization(&security.Authorization{Name: "allow", Namespace: "ns2"})
	d = c.recv(AuthorizationType)
	if got := names(d); !slices.Equal(got, []string{"ns2/allow@6"}) {
		t.Fatalf("policy delta %v", got)
	}
	c.ack(d)
	if err := s.WaitAcked(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}

	// A body of the wrong type is NACKed, and the stream is not synced
	// until a later push is ACKed.
	wrong, err := anypb.New(&security.Authorization{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRaw(AddressType, "bad", wrong)
	d = c.recv(AddressType)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: AddressType, ResponseNonce: d.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "bad: wrong body type"}})
	nacks, err := s.WaitNACKs(waitCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := NACK{TypeURL: AddressType, Nonce: d.GetNonce(), Names: []string{"bad"}, Message: "bad: wrong body type", Node: "node-a"}
	if len(nacks) != 1 || nacks[0].String() != want.String() {
		t.Fatalf("NACKs %v, want [%v]", nacks, want)
	}
	if got := s.NACKs(); len(got) != 1 || got[0].Nonce != d.GetNonce() {
		t.Fatalf("NACKs() %v", got)
	}
	if err := s.WaitAcked(shortCtx(t), 1); err == nil {
		t.Fatal("WaitAcked succeeded with a NACKed response outstanding")
	}
	s.RemoveAddress("bad")
	d = c.recv(AddressType)
	if !slices.Equal(d.GetRemovedResources(), []string{"bad"}) {
		t.Fatalf("removal of bad %v", d)
	}
	c.ack(d)
	if err := s.WaitAcked(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}

	// Istiod goes away: the stream breaks, and Stop leaves no stream.
	s.Stop()
	if _, err := c.stream.Recv(); err == nil {
		t.Fatal("stream survived Stop")
	}
	if n := s.Connected(); n != 0 {
		t.Fatalf("Connected %d after Stop", n)
	}
	s.SetWorkload(&workloadapi.Workload{Uid: "uid-b", Name: "b", Namespace: "default"})

	// It comes back with its state; a resuming client gets everything and
	// a removal for what it holds that is gone.
	if err := s.Start(path); err != nil {
		t.Fatal(err)
	}
	cc := dial(t, ca, path)
	c2 := subscribe(t, cc, "node-a", map[string]string{"uid-a": "4", "default/svc.default.svc.cluster.local": "2"})
	d = c2.recv(AddressType)
	if got := names(d); !slices.Equal(got, []string{"uid-a@4", "uid-b@9"}) || !slices.Equal(d.GetRemovedResources(), []string{"default/svc.default.svc.cluster.local"}) {
		t.Fatalf("resumed addresses %v removed %v", got, d.GetRemovedResources())
	}
	c2.ack(d)
	d = c2.recv(AuthorizationType)
	if got := names(d); !slices.Equal(got, []string{"default/deny@3", "ns2/allow@6"}) {
		t.Fatalf("resumed policies %v", got)
	}
	c2.ack(d)

	// A second client: WaitAcked(2) needs both to ACK every push.
	c3 := subscribe(t, cc, "node-b", nil)
	c3.ack(c3.recv(AddressType))
	c3.ack(c3.recv(AuthorizationType))
	if err := s.WaitAcked(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	s.RemoveAuthorization("default/deny")
	d2, d3 := c2.recv(AuthorizationType), c3.recv(AuthorizationType)
	for _, d := range []*discovery.DeltaDiscoveryResponse{d2, d3} {
		if !slices.Equal(d.GetRemovedResources(), []string{"default/deny"}) {
			t.Fatalf("policy removal %v", d)
		}
	}
	c2.ack(d2)
	if err := s.WaitAcked(shortCtx(t), 2); err == nil {
		t.Fatal("WaitAcked(2) succeeded with one client behind")
	}
	c3.ack(d3)
	if err := s.WaitAcked(waitCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if n := s.Connected(); n != 2 {
		t.Fatalf("Connected %d, want 2", n)
	}
	// The NACK from before the restart is still on record.
	if len(s.NACKs()) != 1 {
		t.Fatalf("NACKs %v", s.NACKs())
	}
	if err := s.Start(path); err == nil {
		t.Fatal("a second Start while serving succeeded")
	}
}

// csr makes a PEM CSR for a fresh key, naming uri if not empty.
func csr(t *testing.T, uri string) (string, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), key, der
}

func TestCA(t *testing.T) {
	s, ca, path := newServer(t)
	client := pb.NewIstioCertificateServiceClient(dial(t, ca, path))
	authed := metadata.AppendToOutgoingContext(waitCtx(t), "authorization", "Bearer "+token)
	const id = "spiffe://cluster.local/ns/echo/sa/client"

	call := func(ctx context.Context, pemCSR string, impersonate string, validity int64) ([]*x509.Certificate, error) {
		t.Helper()
		req := &pb.IstioCertificateRequest{Csr: pemCSR, ValidityDuration: validity}
		if impersonate != "" {
			md, err := structpb.NewStruct(map[string]any{ImpersonatedIdentity: impersonate})
			if err != nil {
				t.Fatal(err)
			}
			req.Metadata = md
		}
		resp, err := client.CreateCertificate(ctx, req)
		if err != nil {
			return nil, err
		}
		var certs []*x509.Certificate
		for _, p := range resp.GetCertChain() {
			b, _ := pem.Decode([]byte(p))
			if b == nil {
				t.Fatalf("chain element is not PEM: %q", p)
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, c)
		}
		return certs, nil
	}
	checkLeaf := func(chain []*x509.Certificate, key *ecdsa.PrivateKey, wantID string, ttl time.Duration) {
		t.Helper()
		if len(chain) != 2 || !chain[1].Equal(ca.Cert) {
			t.Fatalf("chain of %d, want leaf then our root", len(chain))
		}
		leaf := chain[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.RootPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Fatalf("leaf does not verify: %v", err)
		}
		if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
			t.Fatal("leaf is not for the CSR's key")
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
			t.Fatalf("leaf URIs %v, want %s", leaf.URIs, wantID)
		}
		if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
			t.Fatalf("key usage %v", leaf.KeyUsage)
		}
		// Validity is now-1m .. now+ttl; certificates keep whole seconds.
		if got := leaf.NotAfter.Sub(leaf.NotBefore); got < ttl+time.Minute-2*time.Second || got > ttl+time.Minute+2*time.Second {
			t.Fatalf("validity %v, want %v plus the minute of skew", got, ttl)
		}
		if d := time.Until(leaf.NotAfter); d < ttl-5*time.Second || d > ttl+time.Second {
			t.Fatalf("expires in %v, want about %v", d, ttl)
		}
	}

	// Impersonation: the CSR names no one, the metadata names the workload.
	p, key, _ := csr(t, "")
	chain, err := call(authed, p, id, 3600)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(chain, key, id, time.Hour)
	// Without metadata the CSR's SAN is the identity; no validity asked
	// means a day.
	p, key, _ = csr(t, "spiffe://cluster.local/ns/echo/sa/server")
	chain, err = call(authed, p, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(chain, key, "spiffe://cluster.local/ns/echo/sa/server", 24*time.Hour)

	// The override wins over the request, until reset.
	s.SetCATTL(6 * time.Second)
	p, key, _ = csr(t, id)
	if chain, err = call(authed, p, id, 3600); err != nil {
		t.Fatal(err)
	}
	checkLeaf(chain, key, id, 6*time.Second)
	s.SetCATTL(0)
	if chain, err = call(authed, p, id, 120); err != nil {
		t.Fatal(err)
	}
	checkLeaf(chain, key, id, 2*time.Minute)
	if n := s.Issued(id); n != 3 {
		t.Fatalf("Issued(%s) = %d, want 3", id, n)
	}

	wantCode := func(what string, err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Fatalf("%s: got %v, want %v", what, err, want)
		}
	}
	_, err = call(metadata.AppendToOutgoingContext(waitCtx(t), "authorization", "Bearer wrong"), p, id, 60)
	wantCode("wrong token", err, codes.Unauthenticated)
	_, err = call(waitCtx(t), p, id, 60)
	wantCode("no token", err, codes.Unauthenticated)
	_, err = call(metadata.AppendToOutgoingContext(waitCtx(t), "authorization", token), p, id, 60)
	wantCode("token without Bearer", err, codes.Unauthenticated)

	_, err = call(authed, "not a csr", id, 60)
	wantCode("garbage CSR", err, codes.InvalidArgument)
	_, _, der := csr(t, id)
	der[len(der)-1] ^= 0xff // corrupt the signature
	_, err = call(authed, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), id, 60)
	wantCode("forged CSR", err, codes.InvalidArgument)
	_, err = call(authed, p, "spiffe://cluster.local/echo/client", 60)
	wantCode("malformed identity", err, codes.InvalidArgument)
	p2, _, _ := csr(t, "")
	_, err = call(authed, p2, "", 60)
	wantCode("no identity at all", err, codes.InvalidArgument)

	s.SetCAFailing(true)
	_, err = call(authed, p, id, 60)
	wantCode("failing CA", err, codes.Unavailable)
	s.SetCAFailing(false)
	if _, err = call(authed, p, id, 60); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if n := s.Issued(id); n != 4 {
		t.Fatalf("Issued(%s) = %d after refusals, want 4", id, n)
	}
	if n := s.Issued("spiffe://cluster.local/ns/echo/sa/server"); n != 1 {
		t.Fatalf("Issued(server) = %d, want 1", n)
	}
}

func TestNewValidates(t *testing.T) {
	ca, err := NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Authority: ca}); err == nil {
		t.Fatal("New without a token succeeded")
	}
	if _, err := New(Options{Token: token}); err == nil {
		t.Fatal("New without an authority succeeded")
	}
	s, err := New(Options{Authority: ca, Token: token, ServerName: "cp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.cert.Leaf.DNSNames; !slices.Equal(got, []string{"cp.example"}) {
		t.Fatalf("serving certificate names %v", got)
	}
	s.Stop() // stopping a server that never started is harmless
}
