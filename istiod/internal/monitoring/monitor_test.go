package monitoring

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/istiod/internal/ca"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

var (
	wds  = map[string]string{"type": "wds"}
	wads = map[string]string{"type": "wads"}
)

func TestXDSMetrics(t *testing.T) {
	s := startIstiod(t)
	s.cache.Set(addressType, "a", body(t, "a"))
	s.cache.Set(addressType, "b", body(t, "b"))

	m := s.scrape(t)
	if v := m.value("pilot_xds", nil); v != -1 {
		t.Fatalf("pilot_xds = %v with nobody connected, want no series", v)
	}

	p := s.proxy(t)
	p.subscribe(addressType)
	p.ack(p.recv())
	p.send(&xdsapi.DeltaDiscoveryRequest{TypeUrl: authorizationType})
	p.ack(p.recv())
	eventually(t, "both ACKs", func() bool {
		cs := s.ads.Connections()
		return len(cs) == 1 && len(cs[0].Types) == 2 && cs[0].Types[0].LastACKedNonce != "" && cs[0].Types[1].LastACKedNonce != ""
	})

	m = s.scrape(t)
	for _, tc := range []struct {
		name string
		kind dto.MetricType
	}{
		{"pilot_xds", dto.MetricType_GAUGE},
		{"pilot_xds_pushes", dto.MetricType_COUNTER},
		{"pilot_xds_push_time", dto.MetricType_HISTOGRAM},
		{"pilot_xds_send_time", dto.MetricType_HISTOGRAM},
		{"pilot_proxy_convergence_time", dto.MetricType_HISTOGRAM},
		{"pilot_xds_config_size_bytes", dto.MetricType_HISTOGRAM},
	} {
		if m[tc.name] == nil {
			t.Errorf("%s missing", tc.name)
		} else if m.kind(tc.name) != tc.kind {
			t.Errorf("%s is a %v, want %v", tc.name, m.kind(tc.name), tc.kind)
		}
	}
	if v := m.value("pilot_xds", map[string]string{"version": "1.28.0"}); v != 1 {
		t.Errorf("pilot_xds{version=1.28.0} = %v, want 1", v)
	}
	if a, z := m.value("pilot_xds_pushes", wds), m.value("pilot_xds_pushes", wads); a != 1 || z != 1 {
		t.Errorf("pushes wds=%v wads=%v, want 1 each", a, z)
	}
	if n := m.observations("pilot_xds_push_time", wds); n != 1 {
		t.Errorf("push_time{wds} has %d observations, want 1", n)
	}
	if n := m.observations("pilot_proxy_convergence_time", nil); n != 2 {
		t.Errorf("convergence_time has %d observations, want 2", n)
	}
	if n := m.observations("pilot_xds_send_time", nil); n != 2 {
		t.Errorf("send_time has %d observations, want 2", n)
	}
	if sz := m.find("pilot_xds_config_size_bytes", wds).GetHistogram().GetSampleSum(); sz < 10 {
		t.Errorf("config size of a two-resource response = %v bytes", sz)
	}

	// A rejected change moves the reject counter of its type only.
	s.cache.Set(addressType, "a", body(t, "bad"))
	p.nack(p.recv(), "address a: bad ip")
	eventually(t, "the NACK", func() bool { return s.ads.Stats().NACKs == 1 })
	m = s.scrape(t)
	if v := m.value("pilot_total_xds_rejects", wds); v != 1 || m.kind("pilot_total_xds_rejects") != dto.MetricType_COUNTER {
		t.Errorf("rejects{wds} = %v (%v), want counter at 1", v, m.kind("pilot_total_xds_rejects"))
	}
	if v := m.value("pilot_total_xds_rejects", wads); v != -1 {
		t.Errorf("rejects{wads} = %v, want no series", v)
	}
	if v := m.value("pilot_xds_pushes", wds); v != 2 {
		t.Errorf("pushes{wds} = %v, want 2", v)
	}

	p.cancel()
	eventually(t, "the disconnect", func() bool { return s.ads.Stats().Connected == 0 })
	if v := s.scrape(t).value("pilot_xds", nil); v != -1 {
		t.Errorf("pilot_xds = %v after the proxy left, want no series", v)
	}
}

func TestCAMetrics(t *testing.T) {
	s := startIstiod(t)
	client := s.caClient(t)
	call := func(token string, req *pb.IstioCertificateRequest) error {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
		_, err := client.CreateCertificate(ctx, req)
		return err
	}
	good := func() *pb.IstioCertificateRequest { return &pb.IstioCertificateRequest{Csr: csrPEM(t)} }
	impersonate := good()
	impersonate.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
		ca.ImpersonatedIdentityKey: structpb.NewStringValue("spiffe://cluster.local/ns/default/sa/httpbin"),
	}}
	for _, tc := range []struct {
		token string
		req   *pb.IstioCertificateRequest
		code  codes.Code
	}{
		{"sleep-token", good(), codes.OK},
		{"sleep-token", good(), codes.OK},
		{"forged", good(), codes.Unauthenticated},
		{"unavailable", good(), codes.Unavailable},
		{"sleep-token", &pb.IstioCertificateRequest{Csr: "junk"}, codes.InvalidArgument},
		{"sleep-token", impersonate, codes.PermissionDenied},
	} {
		if err := call(tc.token, tc.req); status.Code(err) != tc.code {
			t.Fatalf("token %s: %v, want %v", tc.token, err, tc.code)
		}
	}

	m := s.scrape(t)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"citadel_server_csr_count", nil, 6},
		{"citadel_server_success_cert_issuance_count", nil, 2},
		{"citadel_server_authentication_failure_count", nil, 2},
		{"citadel_server_csr_sign_err_count", map[string]string{"error": "CSR_ERROR"}, 1},
		{"citadel_server_csr_sign_err_count", map[string]string{"error": "CERT_GEN_ERROR"}, 0},
		{"istiod_ca_refusals_total", map[string]string{"reason": ca.ReasonNotNodeAccount}, 1},
		{"istiod_ca_refusals_total", map[string]string{"reason": ca.ReasonUnauthenticated}, 1},
		{"istiod_ca_refusals_total", map[string]string{"reason": ca.ReasonAuthUnavailable}, 1},
		{"citadel_server_root_cert_expiry_timestamp", nil, float64(s.ca.Authority.RootExpiry().Unix())},
		{"citadel_server_cert_chain_expiry_timestamp", nil, float64(s.ca.Authority.ChainExpiry().Unix())},
	} {
		if got := m.value(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, name := range []string{"citadel_server_csr_count", "citadel_server_success_cert_issuance_count"} {
		if m.kind(name) != dto.MetricType_COUNTER {
			t.Errorf("%s is a %v, want a counter", name, m.kind(name))
		}
	}
	// A fresh self-signed root lives ten years.
	left := time.Duration(m.value("citadel_server_root_cert_expiry_seconds", nil) * float64(time.Second))
	if want := ca.DefaultRootTTL; math.Abs(float64(left-want)) > float64(time.Hour) {
		t.Errorf("root expires in %v, want about %v", left, want)
	}
}

func TestDebugEndpoints(t *testing.T) {
	s := startIstiod(t)
	s.cache.Set(addressType, "a", body(t, "a"))
	s.cache.Set(addressType, "b", body(t, "b"))
	p := s.proxy(t)
	p.subscribe(addressType)
	first := p.recv()
	p.ack(first)
	eventually(t, "the ACK", func() bool { return s.ads.Connections()[0].Types[0].LastACKedNonce == first.GetNonce() })

	var conns connectionsJSON
	s.getJSON(t, "/debug/connections", &conns)
	if len(conns.Connections) != 1 {
		t.Fatalf("connections = %+v", conns)
	}
	c := conns.Connections[0]
	if c.Node != nodeID || !strings.HasPrefix(c.Peer, "127.0.0.1:") || c.ProxyVersion != "1.28.0" || c.ConnectedAt.IsZero() || len(c.Types) != 1 {
		t.Fatalf("connection = %+v", c)
	}
	if ty := c.Types[0]; ty.Type != addressType || !ty.Wildcard || ty.Resources != 2 || ty.ResourcesSent != 2 || ty.Responses != 1 ||
		ty.LastSentNonce != first.GetNonce() || ty.LastACKedNonce != first.GetNonce() || ty.AwaitingACK || ty.NACKs != 0 {
		t.Fatalf("type = %+v", ty)
	}

	wantSync := func(status, nack string) {
		t.Helper()
		var sz synczJSON
		s.getJSON(t, "/debug/syncz", &sz)
		if len(sz.Proxies) != 1 || sz.Proxies[0].Node != nodeID || len(sz.Proxies[0].Types) != 1 {
			t.Fatalf("syncz = %+v", sz)
		}
		if ty := sz.Proxies[0].Types[0]; ty.Status != status || ty.NACK != nack {
			t.Fatalf("syncz type = %+v, want status %q, nack %q", ty, status, nack)
		}
	}
	wantSync(statusSynced, "")

	// Sent, not yet answered: the proxy is behind, and config_dump shows
	// the version it was sent, not the one the cache moved on to since.
	s.cache.Set(addressType, "a", body(t, "a2"))
	pending := p.recv()
	wantSync(statusStale, "")
	sentA, _, _ := s.cache.Get(addressType, "a")
	s.cache.Set(addressType, "a", body(t, "a3"))

	var dump configDumpJSON
	s.getJSON(t, "/debug/config_dump?resources=true&proxyID="+url.QueryEscape(nodeID), &dump)
	if len(dump.Proxies) != 1 || len(dump.Proxies[0].Types) != 1 || dump.Proxies[0].Types[0].Type != addressType {
		t.Fatalf("config_dump = %+v", dump)
	}
	res := dump.Proxies[0].Types[0].Resources
	if len(res) != 2 || res[0].Name != "a" || res[1].Name != "b" {
		t.Fatalf("resources = %+v, want a and b", res)
	}
	if res[0].Version != sentA || res[0].Resource != nil || !strings.Contains(res[0].Note, "cache holds version") {
		t.Errorf("a = %+v, want the sent version %s, no body and a note", res[0], sentA)
	}
	var b struct {
		Type  string `json:"@type"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(res[1].Resource, &b); err != nil || b.Value != "b" || !strings.HasSuffix(b.Type, "google.protobuf.StringValue") {
		t.Errorf("b's body = %s (%v)", res[1].Resource, err)
	}

	p.nack(pending, "address a: bad ip")
	eventually(t, "the NACK", func() bool { return s.ads.Connections()[0].Types[0].NACKs == 1 })
	// The NACK freed the type, so a3 goes out; reject that one too.
	p.nack(p.recv(), "address a: still bad")
	eventually(t, "the second NACK", func() bool { return s.ads.Connections()[0].Types[0].NACKs == 2 })
	wantSync(statusNACKed, "address a: still bad")

	// By connection id, names and versions only.
	id := strconv.FormatUint(c.ID, 10)
	dump = configDumpJSON{}
	s.getJSON(t, "/debug/config_dump?proxyID="+id, &dump)
	res = dump.Proxies[0].Types[0].Resources
	if cur, _, _ := s.cache.Get(addressType, "a"); len(res) != 2 || res[0].Version != cur || res[0].Resource != nil || res[1].Resource != nil {
		t.Errorf("dump by connection id = %+v", res)
	}

	for _, tc := range []struct {
		path string
		code int
	}{
		{"/debug/config_dump", http.StatusBadRequest},
		{"/debug/config_dump?proxyID=nobody", http.StatusNotFound},
		{"/debug/config_dump?proxyID=" + strconv.FormatUint(c.ID+1, 10), http.StatusNotFound},
	} {
		code, body := s.get(t, tc.path)
		var e struct {
			Error string `json:"error"`
		}
		if code != tc.code || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("GET %s = %d %s, want %d with an error", tc.path, code, body, tc.code)
		}
	}
}
