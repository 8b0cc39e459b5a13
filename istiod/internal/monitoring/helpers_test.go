package monitoring

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/ca"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/pkg/xdsapi/xdsgrpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	nodeID = "ztunnel~10.0.0.1~ztunnel-abc.istio-system~istio-system.svc.cluster.local"
	wait   = 10 * time.Second
)

// fakeAuth maps tokens to callers; "unavailable" fails like an unreachable
// API server.
type fakeAuth map[string]*ca.Caller

func (f fakeAuth) Authenticate(_ context.Context, token string) (*ca.Caller, error) {
	if token == "unavailable" {
		return nil, fmt.Errorf("%w: connection refused", ca.ErrAuthUnavailable)
	}
	if c, ok := f[token]; ok {
		return c, nil
	}
	return nil, ca.ErrTokenRejected
}

// istiod is the part of istiod this package watches: an ADS server and a
// CA server on one gRPC listener, and the monitoring handler over HTTP.
type istiod struct {
	cache    *ads.Cache
	ads      *ads.Server
	ca       *ca.Server
	grpcAddr string
	httpURL  string
}

func startIstiod(t *testing.T) *istiod {
	t.Helper()
	authority, err := ca.NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	s := &istiod{cache: ads.NewCache()}
	s.ads = ads.NewServer(s.cache, log)
	s.ca = &ca.Server{
		Authority:   authority,
		TrustDomain: "cluster.local",
		Authenticate: fakeAuth{
			"sleep-token": {Namespace: "default", ServiceAccount: "sleep", PodName: "sleep-1", NodeName: "node-a"},
		},
		TrustedNodeAccounts: []string{"istio-system/ztunnel"},
		Log:                 log,
	}
	mon := New(Sources{ADS: s.ads, Cache: s.cache, CA: s.ca}, log)
	s.ads.SetObserver(mon)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.ads.Register(g)
	s.ca.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	s.grpcAddr = lis.Addr().String()

	h := httptest.NewServer(mon.Handler())
	s.httpURL = h.URL
	t.Cleanup(func() {
		h.Close()
		g.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func (s *istiod) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// proxy is a Delta ADS client standing in for ztunnel.
type proxy struct {
	t      *testing.T
	s      *xdsgrpc.DeltaStream
	cancel context.CancelFunc
}

func (s *istiod) proxy(t *testing.T) *proxy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := xdsgrpc.OpenDelta(ctx, s.conn(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &proxy{t: t, s: stream, cancel: cancel}
}

func (p *proxy) send(req *xdsapi.DeltaDiscoveryRequest) {
	p.t.Helper()
	if err := p.s.Send(req); err != nil {
		p.t.Fatalf("send: %v", err)
	}
}

// subscribe sends a wildcard subscription to typeURL as node nodeID,
// Istio version 1.28.0.
func (p *proxy) subscribe(typeURL string) {
	p.t.Helper()
	md, err := structpb.NewStruct(map[string]any{"ISTIO_VERSION": "1.28.0"})
	if err != nil {
		p.t.Fatal(err)
	}
	p.send(&xdsapi.DeltaDiscoveryRequest{Node: &xdsapi.Node{Id: nodeID, Metadata: md}, TypeUrl: typeURL})
}

func (p *proxy) recv() *xdsapi.DeltaDiscoveryResponse {
	p.t.Helper()
	type result struct {
		r   *xdsapi.DeltaDiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := p.s.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			p.t.Fatalf("recv: %v", res.err)
		}
		return res.r
	case <-time.After(wait):
		p.cancel() // ends the Recv above
		p.t.Fatal("no response")
		return nil
	}
}

func (p *proxy) ack(r *xdsapi.DeltaDiscoveryResponse) {
	p.t.Helper()
	p.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func (p *proxy) nack(r *xdsapi.DeltaDiscoveryResponse, msg string) {
	p.t.Helper()
	p.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(), ErrorDetail: &xdsapi.Status{Code: 3, Message: msg}})
}

func body(t *testing.T, s string) *anypb.Any {
	t.Helper()
	a, err := ads.MarshalAny(wrapperspb.String(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (s *istiod) caClient(t *testing.T) pb.IstioCertificateServiceClient {
	t.Helper()
	return pb.NewIstioCertificateServiceClient(s.conn(t))
}

func csrPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// get fetches path from the monitoring server and returns status and body.
func (s *istiod) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(s.httpURL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON fetches path, which must answer 200 with JSON, into v.
func (s *istiod) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, b := s.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

// metrics is one scrape of /metrics.
type metrics map[string]*dto.MetricFamily

func (s *istiod) scrape(t *testing.T) metrics {
	t.Helper()
	resp, err := http.Get(s.httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// find returns the series of name whose labels include want.
func (m metrics) find(name string, want map[string]string) *dto.Metric {
	f := m[name]
	if f == nil {
		return nil
	}
next:
	for _, s := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range s.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return s
	}
	return nil
}

// value is the counter or gauge value of name{want}, and -1 if there is no
// such series.
func (m metrics) value(name string, want map[string]string) float64 {
	s := m.find(name, want)
	switch {
	case s == nil:
		return -1
	case s.Counter != nil:
		return s.GetCounter().GetValue()
	case s.Gauge != nil:
		return s.GetGauge().GetValue()
	default:
		return s.GetUntyped().GetValue()
	}
}

// observations is the sample count of histogram name{want}, and -1 if
// there is no such series.
func (m metrics) observations(name string, want map[string]string) int {
	s := m.find(name, want)
	if s == nil || s.Histogram == nil {
		return -1
	}
	return int(s.GetHistogram().GetSampleCount())
}

func (m metrics) kind(name string) dto.MetricType {
	return m[name].GetType()
}

// eventually polls cond until it holds or the bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
