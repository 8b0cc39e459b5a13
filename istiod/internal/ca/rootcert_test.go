package ca

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const testRoot = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

func rootConfigMap(ns string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: ns}, Data: data}
}

// runPublisher runs p until the test ends and returns its log.
func runPublisher(t *testing.T, p *RootPublisher) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	p.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("publisher log:\n%s", logs)
		}
	})
	return logs
}

// rootIn returns the published root of ns, "" if there is none.
func rootIn(t *testing.T, client *fake.Clientset, ns string) string {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), RootCertConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data[RootCertKey]
}

func TestRootPublisher(t *testing.T) {
	gone := namespace("gone", nil)
	gone.DeletionTimestamp = &metav1.Time{}
	gone.Status.Phase = corev1.NamespaceTerminating
	client := fake.NewClientset(
		namespace("default", nil),
		namespace("app", nil),
		gone,
		rootConfigMap("app", map[string]string{RootCertKey: "stale", "other": "kept"}),
		// Not ours, in a namespace we publish to: left alone.
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: "default"}, Data: map[string]string{RootCertKey: "x"}},
	)
	logs := runPublisher(t, &RootPublisher{Client: client, RootPEM: []byte(testRoot)})
	ctx := t.Context()
	cms := client.CoreV1().ConfigMaps

	t.Run("created where missing", func(t *testing.T) {
		eventually(t, "root in default", func() bool { return rootIn(t, client, "default") == testRoot })
		cm, err := cms("default").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Labels["istio.io/config"] != "true" {
			t.Errorf("labels %v, want istio.io/config=true", cm.Labels)
		}
	})
	t.Run("stale one updated, other keys kept", func(t *testing.T) {
		eventually(t, "root in app", func() bool { return rootIn(t, client, "app") == testRoot })
		cm, err := cms("app").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["other"] != "kept" {
			t.Errorf("data %v lost the key other", cm.Data)
		}
	})
	t.Run("namespace being deleted skipped", func(t *testing.T) {
		eventually(t, "skip of gone logged", func() bool {
			return strings.Contains(logs.String(), `msg="skipping a namespace being deleted" namespace=gone`)
		})
		if got := rootIn(t, client, "gone"); got != "" {
			t.Errorf("published into a namespace being deleted")
		}
	})
	t.Run("new namespace", func(t *testing.T) {
		if _, err := client.CoreV1().Namespaces().Create(ctx, namespace("late", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "root in late", func() bool { return rootIn(t, client, "late") == testRoot })
	})
	t.Run("user edit reverted", func(t *testing.T) {
		cm, err := cms("default").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[RootCertKey] = "edited by hand"
		if _, err := cms("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "root in default restored", func() bool { return rootIn(t, client, "default") == testRoot })
	})
	t.Run("user edit dropping the key reverted", func(t *testing.T) {
		cm, err := cms("late").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data = nil
		if _, err := cms("late").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "root in late restored", func() bool { return rootIn(t, client, "late") == testRoot })
	})
	t.Run("deletion reverted", func(t *testing.T) {
		if err := cms("app").Delete(ctx, RootCertConfigMap, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "root in app recreated", func() bool { return rootIn(t, client, "app") == testRoot })
	})
	if cm, err := cms("default").Get(ctx, "unrelated", metav1.GetOptions{}); err != nil || cm.Data[RootCertKey] != "x" {
		t.Errorf("an unrelated ConfigMap was touched: %v %v", cm, err)
	}
	for _, want := range []string{
		`msg="created the root certificate ConfigMap" namespace=default`,
		`msg="restored the root certificate ConfigMap, which differed from the root" namespace=app`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

func TestRootPublisherSelector(t *testing.T) {
	mesh := map[string]string{"mesh": "yes"}
	client := fake.NewClientset(namespace("in", mesh), namespace("out", nil))
	runPublisher(t, &RootPublisher{Client: client, RootPEM: []byte(testRoot), NamespaceSelector: labels.SelectorFromSet(mesh)})
	eventually(t, "root in in", func() bool { return rootIn(t, client, "in") == testRoot })
	// Namespace events are handled in order, so once the later one is
	// done, the earlier one has been too.
	for _, ns := range []*corev1.Namespace{namespace("out-late", nil), namespace("in-late", mesh)} {
		if _, err := client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "root in in-late", func() bool { return rootIn(t, client, "in-late") == testRoot })
	for _, ns := range []string{"out", "out-late"} {
		if rootIn(t, client, ns) != "" {
			t.Errorf("published into %s, which the selector does not match", ns)
		}
	}
}

func TestRootPublisherRetries(t *testing.T) {
	client := fake.NewClientset(namespace("default", nil))
	fails := 2
	client.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 { // the reactor runs under the fake's lock
			fails--
			return true, nil, apierrors.NewServiceUnavailable("etcd is sad")
		}
		return false, nil, nil
	})
	logs := runPublisher(t, &RootPublisher{Client: client, RootPEM: []byte(testRoot)})
	eventually(t, "root in default after retries", func() bool { return rootIn(t, client, "default") == testRoot })
	if !strings.Contains(logs.String(), "root certificate not published; retrying") {
		t.Errorf("failures not logged:\n%s", logs)
	}
}

func TestRootPublisherConfig(t *testing.T) {
	for _, p := range []*RootPublisher{{RootPEM: []byte(testRoot)}, {Client: fake.NewClientset()}} {
		if err := p.Run(t.Context()); err == nil {
			t.Errorf("Run(%+v) started without a client or root", p)
		}
	}
}
