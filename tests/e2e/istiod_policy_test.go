//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientsecurityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/tests/adsclient"
	"github.com/ambient-mesh/mesh/tests/framework"
)

// TestIstiodPolicy runs istiod against the cluster with the Istio CRDs
// installed and checks, through a Delta ADS client subscribed like a
// ztunnel, that AuthorizationPolicies and PeerAuthentications arrive as
// Authorizations that the selected workloads list; that a policy ztunnel
// cannot fully enforce is served fail-closed and says so in its status
// without holding back the others; and that a bad mesh ConfigMap is
// reported and changes nothing.
func TestIstiodPolicy(t *testing.T) {
	c := framework.Get(t)
	c.InstallCRDs(t)
	ctx := t.Context()
	istio, err := istioclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ready := c.ReadyNodes(t)
	if len(ready) == 0 {
		t.Fatal("no ready node")
	}

	runID := randomHex(4)
	selected := map[string]string{"e2e.mesh/istiod-policy": runID}
	// istiod's namespace is the mesh's root namespace unless the mesh
	// config says otherwise.
	system := c.NewNamespace(t, "istiod-pol", selected)
	apps := c.NewNamespace(t, "istiod-pol-app", map[string]string{"e2e.mesh/istiod-policy": runID, "istio.io/dataplane-mode": "ambient"})

	p := startIstiod(t, buildIstiod(t), "-kubeconfig", c.Kubeconfig, "-namespace", system.Name,
		"-root-namespace-selector", "e2e.mesh/istiod-policy="+runID, "-node-accounts", system.Name+"/ztunnel",
		"-grpc-addr", "127.0.0.1:0", "-secure-grpc-addr", "127.0.0.1:0", "-ready-addr", "127.0.0.1:0", "-monitoring-addr", "127.0.0.1:0", "-log-level", "debug")
	p.waitReady(t, time.Minute)

	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ads, err := adsclient.Start(ctx, cc, adsclient.Options{
		NodeID: "ztunnel~127.0.0.1~e2e.default~default.svc.cluster.local",
		Types:  []string{adsclient.AddressType, adsclient.AuthorizationType},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ads.Close() })
	waitADS(t, p, ads, "first responses", 30*time.Second, ads.Synced)

	if _, err := c.Client.CoreV1().ServiceAccounts(apps.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sleep"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createSleepPod(t, c, apps, "db", "sleep", ready[0])
	waitPodRunning(t, c, apps, "db", 2*time.Minute)
	dbUID := "Kubernetes//Pod/" + apps.Name + "/db"
	listed := func() []string {
		r, ok := ads.Resource(adsclient.AddressType, dbUID)
		if !ok || !r.Held() {
			return nil
		}
		var addr workloadapi.Address
		if err := r.Body.UnmarshalTo(&addr); err != nil {
			return nil
		}
		return addr.GetWorkload().GetAuthorizationPolicies()
	}
	waitADS(t, p, ads, "the db workload", time.Minute, func() bool {
		_, ok := ads.Resource(adsclient.AddressType, dbUID)
		return ok
	})
	aps := istio.SecurityV1().AuthorizationPolicies(apps.Name)

	t.Run("selector policy is served and listed by its workload", func(t *testing.T) {
		ap := &clientsecurityv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "allow-app-ns"},
			Spec: securityv1beta1.AuthorizationPolicy{
				Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}},
				Rules:    []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{apps.Name}}}}}},
			},
		}
		if _, err := aps.Create(ctx, ap, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		name := apps.Name + "/allow-app-ns"
		waitADS(t, p, ads, "the Authorization", 30*time.Second, func() bool {
			a := authorization(ads, name)
			return a != nil && a.GetScope() == security.Scope_WORKLOAD_SELECTOR && a.GetAction() == security.Action_ALLOW &&
				len(a.GetGroups()) == 1
		})
		waitADS(t, p, ads, "the workload to list it", 30*time.Second, func() bool { return slices.Contains(listed(), name) })
		waitCondition(t, p, "accepted", func() (*metav1alpha1.IstioStatus, error) {
			got, err := aps.Get(ctx, "allow-app-ns", metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return &got.Status, nil
		}, "Accepted", "")
	})

	t.Run("HTTP rules fail closed and are reported", func(t *testing.T) {
		ap := &clientsecurityv1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "get-only"},
			Spec: securityv1beta1.AuthorizationPolicy{
				Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}},
				Rules:    []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: []string{"GET"}}}}}},
			},
		}
		if _, err := aps.Create(ctx, ap, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		name := apps.Name + "/get-only"
		waitADS(t, p, ads, "the L7 policy as allow-nothing", 30*time.Second, func() bool {
			a := authorization(ads, name)
			return a != nil && a.GetAction() == security.Action_ALLOW && len(a.GetGroups()) == 0
		})
		waitCondition(t, p, "unsupported value", func() (*metav1alpha1.IstioStatus, error) {
			got, err := aps.Get(ctx, "get-only", metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return &got.Status, nil
		}, "UnsupportedValue", "rules[0].to[0].operation.methods")
		if authorization(ads, apps.Name+"/allow-app-ns") == nil {
			t.Error("the valid policy stopped being served")
		}
		if !strings.Contains(p.logs.String(), "get-only") {
			t.Error("istiod's log does not name the policy it could not enforce")
		}
	})

	t.Run("PeerAuthentication STRICT and a namespace exception", func(t *testing.T) {
		strict := system.Name + "/istio_converted_static_strict"
		pas := istio.SecurityV1().PeerAuthentications
		mesh := &clientsecurityv1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec:       securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}},
		}
		if _, err := pas(system.Name).Create(ctx, mesh, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitADS(t, p, ads, "the workload to list the static strict policy", 30*time.Second, func() bool {
			return authorization(ads, strict) != nil && slices.Contains(listed(), strict)
		})
		relax := &clientsecurityv1.PeerAuthentication{
			ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec:       securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}},
		}
		if _, err := pas(apps.Name).Create(ctx, relax, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitADS(t, p, ads, "the namespace's PERMISSIVE to win over the mesh's STRICT", 30*time.Second, func() bool {
			return !slices.Contains(listed(), strict) && slices.Contains(listed(), apps.Name+"/allow-app-ns")
		})
	})

	t.Run("bad mesh config is reported and changes nothing", func(t *testing.T) {
		before := authorization(ads, apps.Name+"/allow-app-ns")
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "istio"},
			Data:       map[string]string{"mesh": "rootNamespace: [not, a, string]\n"},
		}
		if _, err := c.Client.CoreV1().ConfigMaps(system.Name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			evs, err := c.Client.CoreV1().Events(system.Name).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=istio"})
			if err == nil && slices.ContainsFunc(evs.Items, func(e corev1.Event) bool {
				return e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "rootNamespace")
			}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no Warning event naming rootNamespace on ConfigMap istio (last list error %v); log of istiod:\n%s", err, p.logs)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if after := authorization(ads, apps.Name+"/allow-app-ns"); after == nil || !proto.Equal(before, after) {
			t.Errorf("the policies changed after a bad mesh config: %v -> %v", before, after)
		}
	})

	t.Run("deleted policy is removed and unlisted", func(t *testing.T) {
		if err := aps.Delete(ctx, "allow-app-ns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		name := apps.Name + "/allow-app-ns"
		waitADS(t, p, ads, "removal", 30*time.Second, func() bool {
			r, ok := ads.Resource(adsclient.AuthorizationType, name)
			return ok && !r.Held() && !slices.Contains(listed(), name)
		})
	})
}

// authorization returns the held Authorization of that name, or nil.
func authorization(c *adsclient.Client, name string) *security.Authorization {
	r, ok := c.Resource(adsclient.AuthorizationType, name)
	if !ok || !r.Held() {
		return nil
	}
	var a security.Authorization
	if err := r.Body.UnmarshalTo(&a); err != nil {
		return nil
	}
	return &a
}

// waitADS waits until cond holds after some response, failing with
// istiod's log.
func waitADS(t *testing.T, p *istiodProcess, c *adsclient.Client, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := c.Wait(ctx, cond); err != nil {
		t.Fatalf("%s: %v after %s; log of istiod:\n%s", what, err, timeout, p.logs)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
}

// waitCondition waits for the ZtunnelAccepted condition with reason and a
// message containing text.
func waitCondition(t *testing.T, p *istiodProcess, what string, get func() (*metav1alpha1.IstioStatus, error), reason, text string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		st, err := get()
		if err == nil {
			for _, cond := range st.GetConditions() {
				if cond.GetType() != "ZtunnelAccepted" {
					continue
				}
				last = fmt.Sprintf("%s/%s: %s", cond.GetStatus(), cond.GetReason(), cond.GetMessage())
				if cond.GetReason() == reason && strings.Contains(cond.GetMessage(), text) {
					t.Logf("%s: %s", what, last)
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no ZtunnelAccepted condition with reason %s and %q (last %q, error %v); log of istiod:\n%s", what, reason, text, last, err, p.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
