package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	if _, err := parseFlags(nil); err == nil {
		t.Error("no node name accepted")
	}
	t.Setenv("NODE_NAME", "node7")
	o, err := parseFlags([]string{"-redirect-mode", "nftables"})
	if err != nil || o.nodeName != "node7" || o.mode != "nftables" || o.repair != "capture" {
		t.Errorf("parseFlags = %+v, %v", o, err)
	}
	if _, err := parseFlags([]string{"-repair", "reboot"}); err == nil {
		t.Error("an unknown repair mode accepted")
	}
}

// TestUninstalling tells a restart (the DaemonSet is there) from an
// uninstall (it is gone, or being deleted), including the uninstall that
// takes the agent's RBAC away before the agent stops, and the DaemonSet
// replaced or orphaned and recreated, which must keep the plugin.
func TestUninstalling(t *testing.T) {
	yes := true
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "istio-cni-node", Namespace: "istio-system", UID: "ds-1"}}
	ownedBy := func(uid types.UID) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "istio-system",
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "istio-cni-node", APIVersion: "apps/v1", UID: uid, Controller: &yes}}}}
	}
	owned := ownedBy("ds-1")
	log := slog.New(slog.DiscardHandler)
	dsGVR := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
	podGVR := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	refuse := func(cs *fake.Clientset) {
		cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: a.GetResource().Resource}, "x", errors.New("no RBAC"))
		})
	}
	agent := func(cs *fake.Clientset) *ownerWatch {
		return &ownerWatch{client: cs, namespace: "istio-system", pod: "agent-x", log: log}
	}
	// started runs the agent's watch until the test ends and returns once
	// it watches the DaemonSet.
	started := func(t *testing.T, cs *fake.Clientset) *ownerWatch {
		watching := make(chan struct{}, 1)
		cs.PrependWatchReactor("daemonsets", func(a k8stesting.Action) (bool, watch.Interface, error) {
			w, err := cs.Tracker().Watch(dsGVR, a.GetNamespace())
			select {
			case watching <- struct{}{}:
			default:
			}
			return true, w, err
		})
		w := agent(cs)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		select {
		case <-watching:
		case <-time.After(10 * time.Second):
			t.Fatal("the agent never watched its DaemonSet")
		}
		return w
	}
	seenDeleted := func(t *testing.T, w *ownerWatch) {
		deadline := time.Now().Add(10 * time.Second)
		for !w.deleted.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !w.deleted.Load() {
			t.Fatal("the watch did not see the DaemonSet deleted")
		}
	}

	t.Run("restart", func(t *testing.T) {
		if started(t, fake.NewClientset(owned, ds)).uninstalling() {
			t.Error("a restart with the DaemonSet in place was taken for an uninstall")
		}
	})
	t.Run("uninstall that removes the agent's RBAC right after the DaemonSet", func(t *testing.T) {
		cs := fake.NewClientset(owned, ds)
		w := started(t, cs)
		if err := cs.AppsV1().DaemonSets("istio-system").Delete(context.Background(), "istio-cni-node", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		seenDeleted(t, w)
		refuse(cs)
		if !w.uninstalling() {
			t.Error("the DaemonSet was deleted while watched, yet the plugin is kept once the API refuses")
		}
	})
	t.Run("DaemonSet gone, asked at stop", func(t *testing.T) {
		if !agent(fake.NewClientset(owned)).uninstalling() {
			t.Error("the DaemonSet is gone, yet the plugin is kept")
		}
	})
	t.Run("being deleted", func(t *testing.T) {
		deleting := ds.DeepCopy()
		now := metav1.Now()
		deleting.DeletionTimestamp = &now
		deleting.Finalizers = []string{"example.com/hold"}
		if !agent(fake.NewClientset(owned, deleting)).uninstalling() {
			t.Error("the DaemonSet is being deleted, yet the plugin is kept")
		}
	})
	t.Run("orphaned, then adopted by a recreated DaemonSet", func(t *testing.T) {
		cs := fake.NewClientset(owned, ds)
		w := started(t, cs)
		// kubectl delete --cascade=orphan, then the DaemonSet applied again.
		if err := cs.AppsV1().DaemonSets("istio-system").Delete(context.Background(), "istio-cni-node", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		seenDeleted(t, w)
		if !t.Run("orphaned", func(t *testing.T) {
			orphan := owned.DeepCopy()
			orphan.OwnerReferences = nil
			if err := cs.Tracker().Update(podGVR, orphan, "istio-system"); err != nil {
				t.Fatal(err)
			}
			if w.uninstalling() {
				t.Error("an orphaned agent (its DaemonSet deleted with --cascade=orphan) removed the plugin")
			}
		}) {
			return
		}
		recreated := ds.DeepCopy()
		recreated.UID = "ds-2"
		if err := cs.Tracker().Add(recreated); err != nil {
			t.Fatal(err)
		}
		if err := cs.Tracker().Update(podGVR, ownedBy("ds-2"), "istio-system"); err != nil {
			t.Fatal(err)
		}
		if w.uninstalling() {
			t.Error("an agent adopted by the recreated DaemonSet removed the plugin")
		}
	})
	t.Run("replaced under the same name", func(t *testing.T) {
		replaced := ds.DeepCopy()
		replaced.UID = "ds-2"
		if agent(fake.NewClientset(owned, replaced)).uninstalling() {
			t.Error("the old agent of a replaced DaemonSet removed the plugin its successor needs")
		}
	})
	t.Run("API refuses from the start", func(t *testing.T) {
		cs := fake.NewClientset(owned, ds)
		refuse(cs)
		if agent(cs).uninstalling() {
			t.Error("in doubt, the agent must keep the plugin")
		}
	})
}
