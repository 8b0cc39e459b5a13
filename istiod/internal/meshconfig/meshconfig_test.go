package meshconfig

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

var defaults = Config{TrustDomain: "cluster.local", RootNamespace: "istio-system"}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       Config
		err        string
	}{
		{name: "empty", data: "", want: defaults},
		{name: "both", data: "trustDomain: example.org\nrootNamespace: mesh-root\n", want: Config{"example.org", "mesh-root"}},
		{name: "snake case and other fields", data: "root_namespace: r\ndefaultConfig:\n  discoveryAddress: istiod:15012\n", want: Config{"cluster.local", "r"}},
		{name: "unknown field", data: "trustDomian: typo.org\n", err: "trustDomian"},
		{name: "wrong type", data: "trustDomain: [a, b]\n", err: "trustDomain"},
		{name: "not yaml", data: "trustDomain: {\n", err: "not YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.data, defaults)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func configMap(mesh string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: "istio-system"}, Data: map[string]string{Key: mesh}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatcherKeepsLastGood: a good ConfigMap is in force after Start, a
// change reaches the listener, a bad one is reported with an event and
// changes nothing, and a deletion brings back the defaults.
func TestWatcherKeepsLastGood(t *testing.T) {
	client := fake.NewClientset(configMap("rootNamespace: first\n"))
	w := NewWatcher(client, "istio-system", defaults, nil)
	changes := make(chan Config, 10)
	w.OnChange(func(c Config) { changes <- c })
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := w.Current(); got.RootNamespace != "first" {
		t.Fatalf("after Start: %+v", got)
	}
	if len(changes) != 0 {
		t.Fatalf("the initial read was sent as a change")
	}

	cms := client.CoreV1().ConfigMaps("istio-system")
	if _, err := cms.Update(t.Context(), configMap("rootNamespace: second\ntrustDomain: example.org\n"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-changes:
		if c != (Config{"example.org", "second"}) {
			t.Fatalf("change %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
	}

	if _, err := cms.Update(t.Context(), configMap("rootNamespace: [oops]\n"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var events *corev1.EventList
	waitFor(t, "a warning event", func() bool {
		events, _ = client.CoreV1().Events("istio-system").List(t.Context(), metav1.ListOptions{})
		return len(events.Items) > 0
	})
	ev := events.Items[0]
	if ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Name != ConfigMapName || !strings.Contains(ev.Message, "rootNamespace") {
		t.Errorf("event %s %s on %s: %q", ev.Type, ev.Reason, ev.InvolvedObject.Name, ev.Message)
	}
	if got := w.Current(); got != (Config{"example.org", "second"}) {
		t.Errorf("a bad ConfigMap changed the settings: %+v", got)
	}

	if err := cms.Delete(t.Context(), ConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the defaults", func() bool { return w.Current() == defaults })
}
