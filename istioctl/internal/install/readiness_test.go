package install

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
)

func TestDaemonSetProgress(t *testing.T) {
	ds := func(gen, observed int64, desired, updated, ready, available int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Generation: gen},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: observed, DesiredNumberScheduled: desired,
				UpdatedNumberScheduled: updated, NumberReady: ready, NumberAvailable: available},
		}
	}
	tests := []struct {
		ds   *appsv1.DaemonSet
		want string
		done bool
	}{
		{ds(2, 1, 2, 2, 2, 2), "2/2 ready, rollout not observed yet", false},
		{ds(1, 1, 2, 1, 1, 1), "1/2 ready, 1/2 updated", false},
		{ds(1, 1, 2, 2, 1, 1), "1/2 ready, 1/2 available", false},
		{ds(1, 1, 2, 2, 2, 2), "2/2 ready", true},
	}
	for _, tt := range tests {
		p := DaemonSetProgress(tt.ds)
		if p.String() != tt.want || p.Done != tt.done {
			t.Errorf("progress %q done=%v, want %q done=%v", p, p.Done, tt.want, tt.done)
		}
	}
}

func TestDeploymentProgress(t *testing.T) {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "istiod", Generation: 3},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 3, UpdatedReplicas: 2, ReadyReplicas: 3, AvailableReplicas: 3},
	}
	if p := DeploymentProgress(d); p.Done || p.String() != "3/2 ready, 1 old replicas terminating" {
		t.Errorf("progress %q done=%v", p, p.Done)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
	if p := DeploymentProgress(d); !p.Done || p.String() != "2/2 ready" {
		t.Errorf("progress %q done=%v", p, p.Done)
	}
}

func TestCRDProgress(t *testing.T) {
	crd := func(conds ...any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"conditions": conds}}}
	}
	if p := CRDProgress(crd()); p.Done || p.Detail != "not Established yet" {
		t.Errorf("no conditions: %+v", p)
	}
	if p := CRDProgress(crd(map[string]any{"type": "NamesAccepted", "status": "False", "message": "plural conflicts"})); p.Done || p.Detail != "names not accepted: plural conflicts" {
		t.Errorf("names not accepted: %+v", p)
	}
	if p := CRDProgress(crd(map[string]any{"type": "Established", "status": "True"})); !p.Done {
		t.Errorf("established: %+v", p)
	}
}

func TestDescribeNotReady(t *testing.T) {
	at := func(min int) metav1.Time { return metav1.NewTime(time.Date(2026, 11, 22, 6, min, 0, 0, time.UTC)) }
	pods := []corev1.Pod{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-ok"},
			Spec:       corev1.PodSpec{NodeName: "worker-1"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-pull"},
			Spec:       corev1.PodSpec{NodeName: "worker-2"},
			Status: corev1.PodStatus{Phase: corev1.PodPending,
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "containers with unready status: [istio-proxy]"}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "istio-proxy", State: corev1.ContainerState{
					Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "localhost/mesh/ztunnel:nope"`}}}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-crash"},
			Spec:       corev1.PodSpec{NodeName: "worker-3"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning,
				ContainerStatuses: []corev1.ContainerStatus{{Name: "istio-proxy", RestartCount: 4,
					State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 1m20s restarting failed container"}},
					LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1, Message: "connect to istiod.istio-system.svc:15012: connection refused"}}}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-unscheduled"},
			Status: corev1.PodStatus{Phase: corev1.PodPending,
				Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient memory."}}},
		},
	}
	events := []corev1.Event{
		{Type: corev1.EventTypeWarning, Reason: "BackOff", Message: "Back-off restarting failed container istio-proxy", Count: 7, LastTimestamp: at(5),
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "ztunnel-crash"}},
		{Type: corev1.EventTypeWarning, Reason: "Failed", Message: "Failed to pull image: not found", LastTimestamp: at(3),
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "ztunnel-pull"}},
		{Type: corev1.EventTypeNormal, Reason: "Pulled", Message: "pulled", LastTimestamp: at(4),
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "ztunnel-ok"}},
		{Type: corev1.EventTypeWarning, Reason: "Unhealthy", Message: "someone else's", LastTimestamp: at(4),
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "other-pod"}},
	}
	obj := Object{Kind: "DaemonSet", Name: "ztunnel", Namespace: "istio-system"}
	got := DescribeNotReady(obj, Progress{Ready: 1, Desired: 4}, pods, events)
	want := `daemonset/ztunnel is not ready: 1/4 ready
  pod ztunnel-crash (worker-3): Running
    container istio-proxy: waiting: CrashLoopBackOff: back-off 1m20s restarting failed container; last exit: Error (exit code 1): connect to istiod.istio-system.svc:15012: connection refused (4 restarts)
  pod ztunnel-pull (worker-2): Pending
    condition Ready: ContainersNotReady: containers with unready status: [istio-proxy]
    container istio-proxy: waiting: ImagePullBackOff: Back-off pulling image "localhost/mesh/ztunnel:nope"
  pod ztunnel-unscheduled (no node): Pending
    condition PodScheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient memory.
  recent warnings:
    pod/ztunnel-pull: Failed: Failed to pull image: not found
    pod/ztunnel-crash: BackOff: Back-off restarting failed container istio-proxy (x7)`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(got, "ztunnel-ok") || strings.Contains(got, "someone else's") {
		t.Errorf("ready pods and unrelated events must not be shown")
	}
}
