package ztunnelconfig

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// cannedDump builds a dump shaped like ztunnel's admin GET /config_dump.
func cannedDump(t *testing.T) []byte {
	t.Helper()
	pj := func(m proto.Message) json.RawMessage {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	waypoint := &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: "default", Hostname: "waypoint.default.svc.cluster.local"}},
		HboneMtlsPort: 15008,
	}
	ports := &workloadapi.PortList{Ports: []*workloadapi.Port{{ServicePort: 9080, TargetPort: 9080}}}
	workloads := map[string]json.RawMessage{
		"Kubernetes//Pod/default/productpage-v1-87d54dd59-fn6vw": pj(&workloadapi.Workload{
			Uid: "Kubernetes//Pod/default/productpage-v1-87d54dd59-fn6vw", Name: "productpage-v1-87d54dd59-fn6vw", Namespace: "default",
			Addresses: [][]byte{{10, 244, 1, 10}}, Node: "worker-1", TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
			ServiceAccount: "bookinfo-productpage", TrustDomain: "cluster.local",
			Services: map[string]*workloadapi.PortList{"default/productpage.default.svc.cluster.local": ports},
		}),
		"Kubernetes//Pod/default/reviews-v1-5fd6d4f8f8-knbht": pj(&workloadapi.Workload{
			Uid: "Kubernetes//Pod/default/reviews-v1-5fd6d4f8f8-knbht", Name: "reviews-v1-5fd6d4f8f8-knbht", Namespace: "default",
			Addresses: [][]byte{{10, 244, 2, 16}}, Node: "worker-2", TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
			Waypoint: waypoint, Status: workloadapi.WorkloadStatus_UNHEALTHY,
			Services: map[string]*workloadapi.PortList{"default/reviews.default.svc.cluster.local": ports},
		}),
		"Kubernetes//Pod/istio-system/istiod-7ff4959459-qcpvp": pj(&workloadapi.Workload{
			Uid: "Kubernetes//Pod/istio-system/istiod-7ff4959459-qcpvp", Name: "istiod-7ff4959459-qcpvp", Namespace: "istio-system",
			Addresses: [][]byte{{10, 244, 2, 5}}, Node: "worker-2",
		}),
	}
	services := map[string]json.RawMessage{
		"default/productpage.default.svc.cluster.local": pj(&workloadapi.Service{
			Name: "productpage", Namespace: "default", Hostname: "productpage.default.svc.cluster.local",
			Addresses: []*workloadapi.NetworkAddress{{Address: []byte{10, 96, 0, 20}}},
			Ports:     []*workloadapi.Port{{ServicePort: 9080, TargetPort: 9080}},
		}),
		"default/reviews.default.svc.cluster.local": pj(&workloadapi.Service{
			Name: "reviews", Namespace: "default", Hostname: "reviews.default.svc.cluster.local",
			Addresses: []*workloadapi.NetworkAddress{{Address: []byte{10, 96, 0, 21}}}, Waypoint: waypoint,
		}),
	}
	policies := map[string]json.RawMessage{
		"default/allow-productpage": pj(&security.Authorization{Name: "allow-productpage", Namespace: "default", Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_ALLOW}),
		"istio-system/deny-all":     pj(&security.Authorization{Name: "deny-all", Namespace: "istio-system", Scope: security.Scope_GLOBAL, Action: security.Action_DENY}),
		"default/trial-deny":        pj(&security.Authorization{Name: "trial-deny", Namespace: "default", Scope: security.Scope_NAMESPACE, Action: security.Action_DENY, DryRun: true}),
	}
	root, rootKey := makeCert(t, 1, "root", nil, nil, now.Add(-24*time.Hour), now.Add(365*24*time.Hour))
	leaf, _ := makeCert(t, 0xabc123, "", root, rootKey, now.Add(-time.Hour), now.Add(23*time.Hour))
	dump := map[string]any{
		"workloads": workloads,
		"services":  services,
		"policies":  policies,
		"certificates": []map[string]any{{
			"identity": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage", "serial": "abc123",
			"not_before": now.Add(-time.Hour), "not_after": now.Add(23 * time.Hour),
			"chain": []string{pemOf(leaf), pemOf(root)},
		}},
		"pods": []map[string]any{{
			"uid": "uid-pp", "name": "productpage-v1-87d54dd59-fn6vw", "namespace": "default",
			"identity": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage", "ips": []string{"10.244.1.10"},
		}},
		"connections": []map[string]any{
			{"id": 1, "pod": "uid-pp", "direction": "outbound", "src": "10.244.1.10:40000", "dst": "10.244.2.16:9080",
				"dst_identity": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews", "via": "waypoint", "started": now.Add(-90 * time.Second)},
			{"id": 2, "pod": "uid-pp", "direction": "inbound", "src": "10.244.0.7:51000", "dst": "10.244.1.10:9080",
				"src_identity": "spiffe://cluster.local/ns/istio-system/sa/gateway", "started": now.Add(-2 * time.Hour)},
		},
		"resource_versions": map[string]map[string]string{"type.googleapis.com/istio.workload.Address": {"x": "1"}},
	}
	b, err := json.MarshalIndent(dump, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func makeCert(t *testing.T, serial int64, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, notBefore, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: notBefore, NotAfter: notAfter}
	signer := key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
		parent = tmpl
	} else {
		signer = parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func render(t *testing.T, section string, o Options) string {
	t.Helper()
	d, err := Parse(cannedDump(t))
	if err != nil {
		t.Fatal(err)
	}
	o.Now = now
	var b bytes.Buffer
	if err := Write(&b, d, section, o); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// table splits tabwriter output into rows of fields, so tests compare
// cells rather than padding.
func table(s string) [][]string {
	var out [][]string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Fields(l))
	}
	return out
}

func TestShortOutput(t *testing.T) {
	tests := []struct {
		section string
		o       Options
		want    string
	}{
		{"workloads", Options{}, `
NAMESPACE    POD NAME                       ADDRESS     NODE     WAYPOINT PROTOCOL
default      productpage-v1-87d54dd59-fn6vw 10.244.1.10 worker-1 None     HBONE
default      reviews-v1-5fd6d4f8f8-knbht    10.244.2.16 worker-2 waypoint HBONE
istio-system istiod-7ff4959459-qcpvp        10.244.2.5  worker-2 None     TCP
`},
		{"workloads", Options{Namespace: "istio-system"}, `
NAMESPACE    POD NAME                ADDRESS    NODE     WAYPOINT PROTOCOL
istio-system istiod-7ff4959459-qcpvp 10.244.2.5 worker-2 None     TCP
`},
		{"services", Options{}, `
NAMESPACE SERVICE NAME SERVICE VIP WAYPOINT ENDPOINTS
default   productpage  10.96.0.20  None     1/1
default   reviews      10.96.0.21  waypoint 0/1
`},
		{"policies", Options{}, `
NAMESPACE    POLICY NAME       ACTION         SCOPE
default      allow-productpage Allow          WorkloadSelector
default      trial-deny        Deny (dry-run) Namespace
istio-system deny-all          Deny           Global
`},
		{"certificates", Options{}, `
CERTIFICATE NAME                                         TYPE STATUS    VALID CERT SERIAL NUMBER NOT AFTER            NOT BEFORE
spiffe://cluster.local/ns/default/sa/bookinfo-productpage Leaf Available true       abc123        2026-11-23T11:00:00Z 2026-11-22T11:00:00Z
spiffe://cluster.local/ns/default/sa/bookinfo-productpage Root Available true       1             2027-11-22T12:00:00Z 2026-11-21T12:00:00Z
`},
		{"certificates", Options{Namespace: "other"}, `
CERTIFICATE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER NOT BEFORE
`},
		{"connections", Options{}, `
WORKLOAD                               DIRECTION LOCAL             REMOTE            REMOTE IDENTITY                                     PROTOCOL AGE
productpage-v1-87d54dd59-fn6vw.default Inbound   10.244.1.10:9080  10.244.0.7:51000  spiffe://cluster.local/ns/istio-system/sa/gateway   HBONE    2h0m
productpage-v1-87d54dd59-fn6vw.default Outbound  10.244.1.10:40000 10.244.2.16:9080  spiffe://cluster.local/ns/default/sa/bookinfo-reviews HBONE (waypoint) 1m30s
`},
	}
	for _, tt := range tests {
		t.Run(tt.section+"/"+tt.o.Namespace, func(t *testing.T) {
			got := render(t, tt.section, tt.o)
			want := strings.TrimPrefix(tt.want, "\n")
			gt, wt := table(got), table(want)
			if len(gt) != len(wt) {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
			for i := range gt {
				if strings.Join(gt[i], " ") != strings.Join(wt[i], " ") {
					t.Errorf("row %d: got %q, want %q\nfull output:\n%s", i, gt[i], wt[i], got)
				}
			}
		})
	}
}

func TestShortColumnsAlign(t *testing.T) {
	got := render(t, "workloads", Options{})
	lines := strings.Split(got, "\n")
	col := strings.Index(lines[0], "ADDRESS")
	if col < 0 || lines[1][col:col+len("10.244.1.10")] != "10.244.1.10" {
		t.Fatalf("ADDRESS column not aligned:\n%s", got)
	}
}

func TestAllHasEverySection(t *testing.T) {
	got := render(t, "all", Options{})
	for _, h := range []string{"POD NAME", "SERVICE VIP", "POLICY NAME", "CERTIFICATE NAME", "REMOTE IDENTITY"} {
		if !strings.Contains(got, h) {
			t.Errorf("all output lacks %q:\n%s", h, got)
		}
	}
}

func TestJSONAndYAML(t *testing.T) {
	got := render(t, "workloads", Options{Output: OutputJSON, Namespace: "default"})
	var list []map[string]any
	if err := json.Unmarshal([]byte(got), &list); err != nil {
		t.Fatalf("json output does not decode: %v\n%s", err, got)
	}
	if len(list) != 2 || list[0]["name"] != "productpage-v1-87d54dd59-fn6vw" || list[1]["tunnelProtocol"] != "HBONE" {
		t.Fatalf("json workloads = %v", list)
	}
	y := render(t, "policies", Options{Output: OutputYAML})
	if !strings.Contains(y, "name: deny-all") || !strings.Contains(y, "action: DENY") {
		t.Fatalf("yaml policies:\n%s", y)
	}
	all := render(t, "all", Options{Output: OutputJSON})
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(all), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"workloads", "services", "policies", "certificates", "pods", "connections", "resource_versions"} {
		if _, ok := m[k]; !ok {
			t.Errorf("all json lacks %q", k)
		}
	}
}

func TestMalformedDumps(t *testing.T) {
	tests := []struct {
		name, dump, want string
	}{
		{"not json", "<html>502 Bad Gateway</html>", "not a JSON object"},
		{"truncated", `{"workloads": {"a": {"name": "x"`, "not a JSON object"},
		{"other json", `{"status": "ok"}`, "none of workloads, services, policies, certificates (keys: [status])"},
		{"bad workload", `{"workloads": {"default/x": {"addresses": 5}}}`, `workload "default/x"`},
		{"bad service", `{"services": {"default/s": {"name": ["x"]}}}`, `service "default/s"`},
		{"bad certificates", `{"certificates": {"identity": "x"}}`, "malformed ztunnel config dump"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.dump))
			if err == nil || !errors.Is(err, ErrMalformedDump) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrMalformedDump containing %q", err, tt.want)
			}
		})
	}
}

func TestPartialDump(t *testing.T) {
	// A dump with only some sections is fine: the rest are empty.
	d, err := Parse([]byte(`{"workloads": {}, "certificates": [{"identity": "spiffe://cluster.local/ns/a/sa/b", "chain": ["not pem"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, d, "all", Options{Now: now}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Invalid PEM") {
		t.Fatalf("bad chain not reported:\n%s", b.String())
	}
}

func TestUnknownSectionAndFormat(t *testing.T) {
	d, err := Parse([]byte(`{"workloads": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(&bytes.Buffer{}, d, "clusters", Options{}); err == nil || !strings.Contains(err.Error(), `unknown section "clusters"`) {
		t.Fatalf("error %v", err)
	}
	if err := Write(&bytes.Buffer{}, d, "workloads", Options{Output: "wide"}); err == nil || !strings.Contains(err.Error(), `output format "wide"`) {
		t.Fatalf("error %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"workloads": {"a": {"name": "x", "addresses": ["CgAAAQ=="]}}}`))
	f.Add([]byte(`{"certificates": [{"chain": ["x"]}], "connections": [{"pod": "u"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err != nil {
			return
		}
		for _, s := range Sections {
			_ = Write(&bytes.Buffer{}, d, s, Options{Now: now})
			_ = Write(&bytes.Buffer{}, d, s, Options{Now: now, Output: OutputYAML})
		}
	})
}
