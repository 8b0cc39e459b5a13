package bootstrap

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ambient-mesh/mesh/istiod/internal/ca"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

// hasRoot says whether ns holds the published root ConfigMap.
func hasRoot(t *testing.T, client *fake.Clientset, ns string) bool {
	t.Helper()
	_, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), ca.RootCertConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestStartCADefaults(t *testing.T) {
	client := fake.NewClientset(namespace("app", map[string]string{"team": "a"}), namespace("other", nil))
	c, err := StartCA(t.Context(), client, CAOptions{
		Namespace: "istio-system", TrustDomain: "example.org", NodeAccounts: " istio-system/ztunnel, ,kube-system/agent ",
		RootSelector: "team=a", SelectorFlag: "namespace-selector", WaitForSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	if _, err := client.CoreV1().Secrets("istio-system").Get(t.Context(), ca.SelfSignedSecret, metav1.GetOptions{}); err != nil {
		t.Errorf("self-signed secret not created: %v", err)
	}
	s := c.Server
	if s.Authority != c.Authority || s.Pods != c.Pods || s.TrustDomain != "example.org" || s.Log != c.Log {
		t.Errorf("server not wired to the CA: %+v", s)
	}
	if want := []string{"istio-system/ztunnel", "kube-system/agent"}; !slices.Equal(s.TrustedNodeAccounts, want) {
		t.Errorf("TrustedNodeAccounts = %q, want %q", s.TrustedNodeAccounts, want)
	}
	if _, ok := s.Authenticate.(*ca.TokenReviewer); !ok {
		t.Errorf("Authenticate = %T, want the token's node kept (*ca.TokenReviewer)", s.Authenticate)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !hasRoot(t, client, "app") {
		if time.Now().After(deadline) {
			t.Fatal("root not published to the selected namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if hasRoot(t, client, "other") {
		t.Error("root published to a namespace the selector does not match")
	}
}

func TestStartCAOptions(t *testing.T) {
	client := fake.NewClientset(namespace("app", nil))
	c, err := StartCA(t.Context(), client, CAOptions{Namespace: "istio-system", NoRootPublisher: true, NodeFromPodOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if hasRoot(t, client, "app") {
		t.Error("root published with NoRootPublisher")
	}
	if c.Server.TrustedNodeAccounts != nil {
		t.Errorf("TrustedNodeAccounts = %q, want none", c.Server.TrustedNodeAccounts)
	}
	auth, ok := c.Server.Authenticate.(podNodeOnly)
	if !ok {
		t.Fatalf("Authenticate = %T, want podNodeOnly", c.Server.Authenticate)
	}
	if _, ok := auth.Authenticator.(*ca.TokenReviewer); !ok {
		t.Errorf("podNodeOnly wraps %T, want *ca.TokenReviewer", auth.Authenticator)
	}
}

func TestStartCABadSelector(t *testing.T) {
	client := fake.NewClientset()
	_, err := StartCA(t.Context(), client, CAOptions{Namespace: "istio-system", RootSelector: "a in (", SelectorFlag: "root-namespace-selector"})
	if err == nil || !strings.HasPrefix(err.Error(), "-root-namespace-selector: ") {
		t.Fatalf("err = %v, want one naming -root-namespace-selector", err)
	}
	if a := client.Actions(); len(a) != 0 {
		t.Errorf("API calls before the selector was checked: %v", a)
	}
}

type stubAuth struct {
	caller *ca.Caller
	err    error
}

func (s stubAuth) Authenticate(context.Context, string) (*ca.Caller, error) { return s.caller, s.err }

func TestPodNodeOnly(t *testing.T) {
	boom := errors.New("boom")
	c, err := podNodeOnly{stubAuth{caller: &ca.Caller{Namespace: "ns", ServiceAccount: "sa", PodName: "p", NodeName: "node-a"}}}.Authenticate(t.Context(), "t")
	if err != nil || *c != (ca.Caller{Namespace: "ns", ServiceAccount: "sa", PodName: "p"}) {
		t.Errorf("got %+v, %v; want the caller without its node", c, err)
	}
	if c, err := (podNodeOnly{stubAuth{err: boom}}).Authenticate(t.Context(), "t"); c != nil || !errors.Is(err, boom) {
		t.Errorf("got %+v, %v; want the error passed through", c, err)
	}
}

func TestLogger(t *testing.T) {
	var b strings.Builder
	log, err := Logger(&b, "warn", true)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if out := b.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown","component":"istiod"`) {
		t.Errorf("log = %q", out)
	}
	if _, err := Logger(&b, "loud", false); err == nil {
		t.Error("unknown level accepted")
	}
}
