package ca

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(ns, name, uid, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

// eventually waits, with a deadline, until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not after 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startPodIndex(t *testing.T, client *fake.Clientset) *PodIndex {
	t.Helper()
	idx, err := NewPodIndex(t.Context(), client, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(idx.Stop)
	if err := idx.WaitForSync(t.Context()); err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestPodIndex(t *testing.T) {
	client := fake.NewClientset(
		pod("default", "sleep-1", "u1", "sleep", "node-a", corev1.PodRunning),
		pod("default", "pending", "u2", "waiting", "", corev1.PodPending),
		pod("default", "job-1", "u3", "job", "node-a", corev1.PodSucceeded),
		pod("default", "crashed", "u4", "crashed", "node-a", corev1.PodFailed),
		pod("default", "starting", "u5", "starting", "node-b", corev1.PodPending),
		pod("other", "sleep-1", "u6", "", "node-b", corev1.PodRunning),
	)
	idx := startPodIndex(t, client)

	for _, tc := range []struct {
		ns, sa, node string
		want         bool
	}{
		{"default", "sleep", "node-a", true},
		{"default", "sleep", "node-b", false},
		{"default", "httpbin", "node-a", false},
		{"other", "sleep", "node-a", false},
		{"default", "waiting", "", false},
		{"default", "job", "node-a", false},
		{"default", "crashed", "node-a", false},
		{"default", "starting", "node-b", true}, // scheduled, not yet running
		{"other", "default", "node-b", true},    // no service account: the default one
		{"", "", "", false},
	} {
		if got := idx.ServiceAccountHasPodOnNode(tc.ns, tc.sa, tc.node); got != tc.want {
			t.Errorf("ServiceAccountHasPodOnNode(%q, %q, %q) = %v, want %v", tc.ns, tc.sa, tc.node, got, tc.want)
		}
	}

	for _, tc := range []struct {
		ns, name, uid string
		want          string
		ok            bool
	}{
		{"default", "sleep-1", "u1", "node-a", true},
		{"default", "sleep-1", "", "node-a", true},
		{"default", "sleep-1", "u6", "", false}, // a same-named pod's uid
		{"other", "sleep-1", "u6", "node-b", true},
		{"default", "nobody", "", "", false},
		{"default", "pending", "u2", "", false},
		{"default", "job-1", "u3", "", false},
	} {
		if got, ok := idx.NodeOfPod(tc.ns, tc.name, tc.uid); got != tc.want || ok != tc.ok {
			t.Errorf("NodeOfPod(%q, %q, %q) = %q, %v; want %q, %v", tc.ns, tc.name, tc.uid, got, ok, tc.want, tc.ok)
		}
	}

	pods := client.CoreV1().Pods("default")
	t.Run("pod added", func(t *testing.T) {
		if _, err := pods.Create(t.Context(), pod("default", "httpbin-1", "u7", "httpbin", "node-b", corev1.PodRunning), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "httpbin counts on node-b", func() bool { return idx.ServiceAccountHasPodOnNode("default", "httpbin", "node-b") })
	})
	t.Run("pod scheduled", func(t *testing.T) {
		p := pod("default", "pending", "u2", "waiting", "node-b", corev1.PodPending)
		if _, err := pods.Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "waiting counts on node-b", func() bool { return idx.ServiceAccountHasPodOnNode("default", "waiting", "node-b") })
	})
	t.Run("pod terminated", func(t *testing.T) {
		p := pod("default", "httpbin-1", "u7", "httpbin", "node-b", corev1.PodSucceeded)
		if _, err := pods.UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "terminated httpbin stops counting", func() bool { return !idx.ServiceAccountHasPodOnNode("default", "httpbin", "node-b") })
		if node, ok := idx.NodeOfPod("default", "httpbin-1", "u7"); ok {
			t.Errorf("NodeOfPod of a terminated pod = %q, want none", node)
		}
	})
	t.Run("pod deleted", func(t *testing.T) {
		if err := pods.Delete(t.Context(), "sleep-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "deleted sleep stops counting", func() bool { return !idx.ServiceAccountHasPodOnNode("default", "sleep", "node-a") })
		if node, ok := idx.NodeOfPod("default", "sleep-1", "u1"); ok {
			t.Errorf("NodeOfPod of a deleted pod = %q, want none", node)
		}
	})
	t.Run("pod replaced under the same name", func(t *testing.T) {
		if _, err := pods.Create(t.Context(), pod("default", "sleep-1", "u8", "sleep", "node-b", corev1.PodRunning), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "new sleep-1 indexed", func() bool { _, ok := idx.NodeOfPod("default", "sleep-1", "u8"); return ok })
		// A token bound to the old pod names the old uid.
		if node, ok := idx.NodeOfPod("default", "sleep-1", "u1"); ok {
			t.Errorf("NodeOfPod with the old uid = %q, want none", node)
		}
	})
}

func TestPodIndexSlim(t *testing.T) {
	p := pod("default", "sleep-1", "u1", "sleep", "node-a", corev1.PodRunning)
	p.Labels = map[string]string{"app": "sleep"}
	p.Spec.Containers = []corev1.Container{{Name: "sleep", Image: "sleep"}}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	client := fake.NewClientset(p)
	idx := startPodIndex(t, client)
	obj, ok, err := idx.informer.GetIndexer().GetByKey("default/sleep-1")
	if err != nil || !ok {
		t.Fatalf("pod not in the cache: %v", err)
	}
	got := obj.(*corev1.Pod)
	if len(got.Spec.Containers) != 0 || got.Labels != nil || got.ManagedFields != nil {
		t.Errorf("cached pod keeps fields the index never reads: %+v", got)
	}
	if got.UID != "u1" || got.Spec.NodeName != "node-a" || got.Spec.ServiceAccountName != "sleep" || got.Status.Phase != corev1.PodRunning {
		t.Errorf("cached pod lost fields the index reads: %+v", got)
	}
}

func TestPodIndexStopped(t *testing.T) {
	idx, err := NewPodIndex(t.Context(), fake.NewClientset(), nil)
	if err != nil {
		t.Fatal(err)
	}
	idx.Stop()
	idx.Stop() // idempotent
	if idx.ServiceAccountHasPodOnNode("default", "sleep", "node-a") {
		t.Error("an empty index found a pod")
	}
}
