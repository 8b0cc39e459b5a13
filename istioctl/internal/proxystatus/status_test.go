package proxystatus

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const connectionsBody = `{"connections": [
  {"id": 7, "node": "ztunnel~10.244.1.3~ztunnel-abcde.istio-system~istio-system.svc.cluster.local", "peer": "10.244.1.3:40000",
   "proxy_version": "1.28.0", "connected_at": "2026-11-22T05:00:00Z", "types": []},
  {"id": 9, "node": "ztunnel~10.244.2.3~ztunnel-fghij.istio-system~istio-system.svc.cluster.local", "connected_at": "2026-11-22T05:00:00Z", "types": []},
  {"id": 11, "node": "sidecar~1.2.3.4~x", "proxy_version": "1.28.0", "connected_at": "2026-11-22T05:00:00Z"}
]}`

const synczBody = `{"proxies": [
  {"id": 7, "node": "ztunnel~10.244.1.3~ztunnel-abcde.istio-system~istio-system.svc.cluster.local", "types": [
    {"type": "type.googleapis.com/istio.workload.Address", "status": "SYNCED", "sent_nonce": "3", "acked_nonce": "3"},
    {"type": "type.googleapis.com/istio.security.Authorization", "status": "STALE", "sent_nonce": "4", "acked_nonce": "2"}]},
  {"id": 9, "node": "ztunnel~10.244.2.3~ztunnel-fghij.istio-system~istio-system.svc.cluster.local", "types": [
    {"type": "type.googleapis.com/istio.workload.Address", "status": "NACKED", "nack": "bad address"},
    {"type": "type.googleapis.com/istio.security.Authorization", "status": "NOT SENT"}]}
]}`

func TestWrite(t *testing.T) {
	conns, err := ParseConnections([]byte(connectionsBody))
	if err != nil {
		t.Fatal(err)
	}
	sync, err := ParseSyncz([]byte(synczBody))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, Rows("istiod-5d4c7b-xyz", conns, sync)); err != nil {
		t.Fatal(err)
	}
	want := `NAME                         CLUSTER      ISTIOD              VERSION   ADDRESS   AUTHORIZATION
sidecar~1.2.3.4~x            Kubernetes   istiod-5d4c7b-xyz   1.28.0    IGNORED   IGNORED
ztunnel-abcde.istio-system   Kubernetes   istiod-5d4c7b-xyz   1.28.0    SYNCED    STALE
ztunnel-fghij.istio-system   Kubernetes   istiod-5d4c7b-xyz   unknown   NACKED    NOT SENT
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		f    func([]byte) error
		want string
	}{
		{"connections not json", "404 page not found", func(b []byte) error { _, err := ParseConnections(b); return err }, "/debug/connections: malformed istiod debug response: not a JSON object"},
		{"connections missing field", `{"proxies": []}`, func(b []byte) error { _, err := ParseConnections(b); return err }, `no "connections" field`},
		{"syncz wrong shape", `{"proxies": {"a": 1}}`, func(b []byte) error { _, err := ParseSyncz(b); return err }, "/debug/syncz: malformed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f([]byte(tt.body))
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestProxyName(t *testing.T) {
	if got := ProxyName("ztunnel~10.0.0.1~ztunnel-x.istio-system~istio-system.svc.cluster.local"); got != "ztunnel-x.istio-system" {
		t.Fatal(got)
	}
	if got := ProxyName("weird"); got != "weird" {
		t.Fatal(got)
	}
}

func FuzzRows(f *testing.F) {
	f.Add([]byte(connectionsBody), []byte(synczBody))
	f.Fuzz(func(t *testing.T, c, s []byte) {
		conns, err := ParseConnections(c)
		if err != nil {
			return
		}
		sync, err := ParseSyncz(s)
		if err != nil {
			return
		}
		_ = Write(&bytes.Buffer{}, Rows("istiod", conns, sync))
	})
}
