package main

import (
	"log/slog"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
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
// uninstall (it is gone, or being deleted).
func TestUninstalling(t *testing.T) {
	owned := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "istio-system",
		OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "istio-cni-node", APIVersion: "apps/v1"}}}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "istio-cni-node", Namespace: "istio-system"}}
	o := &options{podName: "agent-x", podNamespace: "istio-system"}
	log := slog.New(slog.DiscardHandler)

	if uninstalling(o, fake.NewClientset(owned, ds), log) {
		t.Error("a restart with the DaemonSet in place was taken for an uninstall")
	}
	if !uninstalling(o, fake.NewClientset(owned), log) {
		t.Error("the DaemonSet is gone, yet the plugin is kept")
	}
	deleting := ds.DeepCopy()
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	deleting.Finalizers = []string{"example.com/hold"}
	if !uninstalling(o, fake.NewClientset(owned, deleting), log) {
		t.Error("the DaemonSet is being deleted, yet the plugin is kept")
	}
	if uninstalling(&options{}, fake.NewClientset(), log) {
		t.Error("without its own pod name the agent must keep the plugin")
	}
}
