package waypoint

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestGenerate(t *testing.T) {
	y, err := YAML(Gateway("waypoint", "bookinfo", "service"))
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: bookinfo
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`
	if y != want {
		t.Fatalf("got:\n%s\nwant:\n%s", y, want)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct{ name, forType, want string }{
		{"waypoint", "service", ""},
		{"wp", "all", ""},
		{"none", "service", `waypoint name "none" is reserved`},
		{"", "service", "waypoint name is empty"},
		{"waypoint", "pods", `--for "pods": want one of service, workload, all, none`},
	} {
		err := Validate(tt.name, tt.forType)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%q, %q) = %v, want %q", tt.name, tt.forType, err, tt.want)
		}
	}
}

func withStatus(gw *unstructured.Unstructured, conds ...map[string]any) unstructured.Unstructured {
	var raw []any
	for _, c := range conds {
		raw = append(raw, c)
	}
	_ = unstructured.SetNestedSlice(gw.Object, raw, "status", "conditions")
	return *gw
}

func TestListAndStatus(t *testing.T) {
	ready := withStatus(Gateway("waypoint", "bookinfo", "service"),
		map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"},
		map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed", "message": "Resource programmed, assigned to service(s) waypoint.bookinfo.svc.cluster.local:15008"})
	pending := withStatus(Gateway("reviews-wp", "bookinfo", "workload"),
		map[string]any{"type": "Programmed", "status": "False", "reason": "Pending", "message": "deployment has 0/1 ready replicas"})
	other := Gateway("ingress", "bookinfo", "service")
	_ = unstructured.SetNestedField(other.Object, "istio", "spec", "gatewayClassName")
	fresh := *Gateway("waypoint", "a-ns", "service")
	fresh.SetLabels(map[string]string{LabelRevision: "canary"})

	var b bytes.Buffer
	if err := WriteList(&b, []unstructured.Unstructured{ready, pending, *other}, false); err != nil {
		t.Fatal(err)
	}
	want := `NAME         REVISION   PROGRAMMED
reviews-wp   default    False
waypoint     default    True
`
	if b.String() != want {
		t.Errorf("list:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := WriteList(&b, []unstructured.Unstructured{ready, fresh}, true); err != nil {
		t.Fatal(err)
	}
	want = `NAMESPACE   NAME       REVISION   PROGRAMMED
a-ns        waypoint   canary     Unknown
bookinfo    waypoint   default    True
`
	if b.String() != want {
		t.Errorf("list -A:\n%s\nwant:\n%s", b.String(), want)
	}

	if s, why := Programmed(&pending); s != "False" || why != "Pending: deployment has 0/1 ready replicas" {
		t.Errorf("Programmed = %q, %q", s, why)
	}
	b.Reset()
	if err := WriteStatus(&b, []unstructured.Unstructured{pending, fresh}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bookinfo    reviews-wp   False", "Pending   deployment has 0/1 ready replicas", "no status yet (is istiod running?)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

func TestEnrollDecision(t *testing.T) {
	for _, tt := range []struct {
		current   string
		overwrite bool
		change    bool
		err       string
	}{
		{"", false, true, ""},
		{"waypoint", false, false, ""},
		{"other", false, false, `namespace bookinfo already uses waypoint "other" (label istio.io/use-waypoint); use --overwrite to replace it with "waypoint"`},
		{"other", true, true, ""},
		{"none", false, false, `already uses waypoint "none"`},
	} {
		change, err := EnrollDecision("bookinfo", tt.current, "waypoint", tt.overwrite)
		if change != tt.change || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("EnrollDecision(current %q, overwrite %v) = %v, %v", tt.current, tt.overwrite, change, err)
		}
	}
}
