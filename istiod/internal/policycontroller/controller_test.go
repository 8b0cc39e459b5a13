package policycontroller

import (
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientsecurityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/policy"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

func served(c *istiofake.Clientset) {
	c.Resources = []*metav1.APIResourceList{{
		GroupVersion: GroupVersion,
		APIResources: []metav1.APIResource{{Name: "authorizationpolicies"}, {Name: "peerauthentications"}},
	}}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type recorder struct {
	mu    sync.Mutex
	all   bool
	names []string
}

func (r *recorder) record(all bool, ns []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = r.all || all
	r.names = append(r.names, ns...)
}

func (r *recorder) saw(ns string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.all || slices.Contains(r.names, ns)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all, r.names = false, nil
}

func start(t *testing.T, client *istiofake.Clientset) (*Controller, *ads.Cache, *recorder) {
	t.Helper()
	c := ads.NewCache()
	ctl, err := New(client, client.Discovery(), c, "istio-system", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	ctl.OnAttachmentChange(rec.record)
	errc := make(chan error, 1)
	ctx := t.Context()
	go func() { errc <- ctl.Run(ctx) }()
	t.Cleanup(func() {
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "sync", ctl.HasSynced)
	return ctl, c, rec
}

func condition(status *metav1alpha1.IstioStatus) *metav1alpha1.IstioCondition {
	for _, c := range status.Conditions {
		if c.GetType() == ConditionType {
			return c
		}
	}
	return nil
}

// TestPoliciesReachTheCacheWithStatus drives the controller through a fake
// API: an L4 policy is served and accepted, one with HTTP fields is served
// fail-closed and says so in its status, a waypoint policy is left alone,
// and a deletion removes the resource and re-queues the namespace.
func TestPoliciesReachTheCacheWithStatus(t *testing.T) {
	client := istiofake.NewSimpleClientset()
	served(client)
	ctl, c, rec := start(t, client)
	aps := client.SecurityV1().AuthorizationPolicies("foo")
	ctx := t.Context()

	l4 := &clientsecurityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-sleep", Namespace: "foo", Generation: 3},
		Spec: securityv1beta1.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "httpbin"}},
			Rules:    []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{"sleep"}}}}}},
		},
	}
	if _, err := aps.Create(ctx, l4, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the policy in the cache", func() bool { _, _, ok := c.Get(AuthorizationType, "foo/allow-sleep"); return ok })
	eventually(t, "foo re-queued", func() bool { return rec.saw("foo") })
	if got := ctl.Attached("foo", map[string]string{"app": "httpbin"}); !slices.Equal(got, []string{"foo/allow-sleep"}) {
		t.Errorf("Attached = %v", got)
	}
	eventually(t, "accepted status", func() bool {
		got, _ := aps.Get(ctx, "allow-sleep", metav1.GetOptions{})
		cond := condition(&got.Status)
		return cond != nil && cond.GetReason() == ReasonAccepted && cond.GetStatus() == "True" && cond.GetObservedGeneration() == 3
	})

	l7 := &clientsecurityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "get-only", Namespace: "foo"},
		Spec: securityv1beta1.AuthorizationPolicy{
			Rules: []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: []string{"GET"}}}}}},
		},
	}
	if _, err := aps.Create(ctx, l7, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the L7 policy's status", func() bool {
		got, _ := aps.Get(ctx, "get-only", metav1.GetOptions{})
		cond := condition(&got.Status)
		return cond != nil && cond.GetReason() == ReasonUnsupportedValue && strings.Contains(cond.GetMessage(), "rules[0].to[0].operation.methods")
	})
	_, body, ok := c.Get(AuthorizationType, "foo/get-only")
	if !ok {
		t.Fatal("the L7 policy is not served")
	}
	var a security.Authorization
	if err := body.UnmarshalTo(&a); err != nil {
		t.Fatal(err)
	}
	if a.GetAction() != security.Action_ALLOW || len(a.GetGroups()) != 0 || a.GetScope() != security.Scope_NAMESPACE {
		t.Errorf("L7 ALLOW must be served as allow-nothing for the namespace, got %v", &a)
	}

	dry := &clientsecurityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-all-trial", Namespace: "foo", Annotations: map[string]string{"istio.io/dry-run": "true"}},
		Spec:       securityv1beta1.AuthorizationPolicy{Action: securityv1beta1.AuthorizationPolicy_DENY, Rules: []*securityv1beta1.Rule{{}}},
	}
	if _, err := aps.Create(ctx, dry, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dry-run policy's status", func() bool {
		got, _ := aps.Get(ctx, "deny-all-trial", metav1.GetOptions{})
		cond := condition(&got.Status)
		return cond != nil && cond.GetReason() == ReasonAccepted && strings.Contains(cond.GetMessage(), "dry-run")
	})
	if _, body, ok := c.Get(AuthorizationType, "foo/deny-all-trial"); !ok {
		t.Error("the dry-run policy is not served")
	} else if err := body.UnmarshalTo(&a); err != nil || !a.GetDryRun() || a.GetAction() != security.Action_DENY {
		t.Errorf("the dry-run policy must be served as a dry-run DENY, got %v (%v)", &a, err)
	}

	wp := &clientsecurityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "at-waypoint", Namespace: "foo"},
		Spec: securityv1beta1.AuthorizationPolicy{
			TargetRefs: []*typev1beta1.PolicyTargetReference{{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "waypoint"}},
		},
	}
	if _, err := aps.Create(ctx, wp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The waypoint policy is listed before a later change is processed,
	// so once that change shows, the waypoint policy has been handled.
	rec.reset()
	if err := aps.Delete(ctx, "allow-sleep", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted policy gone", func() bool { _, _, ok := c.Get(AuthorizationType, "foo/allow-sleep"); return !ok })
	eventually(t, "foo re-queued after the deletion", func() bool { return rec.saw("foo") })
	if _, _, ok := c.Get(AuthorizationType, "foo/at-waypoint"); ok {
		t.Error("a targetRefs policy reached ztunnel's resources")
	}
	got, _ := aps.Get(ctx, "at-waypoint", metav1.GetOptions{})
	if cond := condition(&got.Status); cond != nil {
		t.Errorf("a waypoint policy got a ztunnel condition: %v", cond)
	}
}

func TestPeerAuthenticationStrict(t *testing.T) {
	client := istiofake.NewSimpleClientset()
	served(client)
	ctl, c, _ := start(t, client)
	pa := &clientsecurityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "istio-system"},
		Spec:       securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}},
	}
	if _, err := client.SecurityV1().PeerAuthentications("istio-system").Create(t.Context(), pa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const strict = "istio-system/istio_converted_static_strict"
	eventually(t, "the static strict policy", func() bool { _, _, ok := c.Get(AuthorizationType, strict); return ok })
	if got := ctl.Attached("any", nil); !slices.Equal(got, []string{strict}) {
		t.Errorf("Attached = %v", got)
	}
	ctl.SetRootNamespace("mesh-root")
	eventually(t, "the mesh mode to follow the root namespace", func() bool { return len(ctl.Attached("any", nil)) == 0 })
}

func TestWithoutCRDs(t *testing.T) {
	client := istiofake.NewSimpleClientset() // discovery lists nothing
	ctl, c, _ := start(t, client)
	if len(c.Names(AuthorizationType)) != 0 || ctl.Attached("foo", nil) != nil {
		t.Error("policies without CRDs")
	}
}

// TestMain turns off client-go's watch-list streaming: istio.io/client-go's
// fake clientset does not send the bookmark it waits for.
func TestMain(m *testing.M) {
	os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	os.Exit(m.Run())
}

func TestAuthorizationConditionDryRun(t *testing.T) {
	l7 := policy.Report{Ignored: []policy.Issue{{Path: "rules[0].to[0].operation.methods", Reason: "HTTP"}}}
	for _, tc := range []struct {
		name      string
		r         policy.Report
		action    string
		reason    string
		has, lack []string
	}{
		{"plain", policy.Report{}, "DENY", ReasonAccepted, []string{"attached to ztunnel"}, []string{"dry-run"}},
		{"dry-run", policy.Report{DryRun: true}, "DENY", ReasonAccepted, []string{"dry-run", "not enforced"}, nil},
		{"L7 DENY", l7, "DENY", ReasonUnsupportedValue, []string{"methods", "apply without those fields"}, []string{"dry-run"}},
		{"L7 DENY in dry-run", policy.Report{Ignored: l7.Ignored, DryRun: true}, "DENY", ReasonUnsupportedValue,
			[]string{"methods", "apply without those fields", "dry-run", "enforces none of it"}, nil},
		{"bad annotation only", policy.Report{Invalid: []policy.Issue{{Path: "metadata.annotations[istio.io/dry-run]", Reason: "the policy is enforced"}}},
			"ALLOW", ReasonUnsupportedValue, []string{"istio.io/dry-run", "the policy is enforced"}, []string{"rules holding them"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := authorizationCondition(tc.r, tc.action, false)
			if c.GetReason() != tc.reason {
				t.Errorf("reason %q, want %q (%q)", c.GetReason(), tc.reason, c.GetMessage())
			}
			for _, s := range tc.has {
				if !strings.Contains(c.GetMessage(), s) {
					t.Errorf("message %q lacks %q", c.GetMessage(), s)
				}
			}
			for _, s := range tc.lack {
				if strings.Contains(c.GetMessage(), s) {
					t.Errorf("message %q has %q", c.GetMessage(), s)
				}
			}
		})
	}
}
