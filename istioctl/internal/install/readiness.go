package install

import (
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Progress is how far a workload is from ready.
type Progress struct {
	Ready, Desired int32
	Done           bool
	// Detail says what is still awaited when counts alone do not.
	Detail string
}

func (p Progress) String() string {
	s := fmt.Sprintf("%d/%d ready", p.Ready, p.Desired)
	if p.Detail != "" {
		s += ", " + p.Detail
	}
	return s
}

// DeploymentProgress reports a Deployment's rollout: done when the latest
// spec is observed and every wanted replica is updated and available.
func DeploymentProgress(d *appsv1.Deployment) Progress {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	p := Progress{Ready: s.ReadyReplicas, Desired: want}
	switch {
	case s.ObservedGeneration < d.Generation:
		p.Detail = "rollout not observed yet"
	case s.UpdatedReplicas < want:
		p.Detail = fmt.Sprintf("%d/%d updated", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		p.Detail = fmt.Sprintf("%d old replicas terminating", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < want:
		p.Detail = fmt.Sprintf("%d/%d available", s.AvailableReplicas, want)
	default:
		p.Done = true
	}
	return p
}

// DaemonSetProgress reports a DaemonSet's rollout: done when the latest spec
// is observed and its pod is updated and ready on every node it wants.
func DaemonSetProgress(ds *appsv1.DaemonSet) Progress {
	s := ds.Status
	p := Progress{Ready: s.NumberReady, Desired: s.DesiredNumberScheduled}
	switch {
	case s.ObservedGeneration < ds.Generation:
		p.Detail = "rollout not observed yet"
	case s.UpdatedNumberScheduled < s.DesiredNumberScheduled:
		p.Detail = fmt.Sprintf("%d/%d updated", s.UpdatedNumberScheduled, s.DesiredNumberScheduled)
	case s.NumberAvailable < s.DesiredNumberScheduled:
		p.Detail = fmt.Sprintf("%d/%d available", s.NumberAvailable, s.DesiredNumberScheduled)
	default:
		p.Done = true
	}
	return p
}

// CRDProgress reports whether a CustomResourceDefinition is Established.
func CRDProgress(u *unstructured.Unstructured) Progress {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	p := Progress{Desired: 1, Detail: "not Established yet"}
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		typ, _ := m["type"].(string)
		status, _ := m["status"].(string)
		msg, _ := m["message"].(string)
		switch {
		case typ == "Established" && status == "True":
			return Progress{Ready: 1, Desired: 1, Done: true}
		case typ == "NamesAccepted" && status == "False":
			p.Detail = "names not accepted: " + msg
		}
	}
	return p
}

// maxEvents bounds the events a failure report shows.
const maxEvents = 8

// DescribeNotReady explains why obj is not ready: its progress, each pod of
// it that is not ready (phase, failing conditions, and each container's
// waiting or terminated reason and message), and the recent Warning events
// about obj or its pods.
func DescribeNotReady(obj Object, p Progress, pods []corev1.Pod, events []corev1.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is not ready: %s", obj, p)
	names := map[string]bool{}
	pods = slices.Clone(pods)
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for _, pod := range pods {
		names[pod.Name] = true
		if podReady(&pod) {
			continue
		}
		node := pod.Spec.NodeName
		if node == "" {
			node = "no node"
		}
		phase := string(pod.Status.Phase)
		if pod.DeletionTimestamp != nil {
			phase += ", terminating"
		}
		fmt.Fprintf(&b, "\n  pod %s (%s): %s", pod.Name, node, phase)
		for _, c := range pod.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Reason != "" {
				fmt.Fprintf(&b, "\n    condition %s: %s", c.Type, reasonMessage(c.Reason, c.Message))
			}
		}
		statuses := append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...)
		for _, cs := range statuses {
			if cs.Ready {
				continue
			}
			if line := containerState(cs); line != "" {
				fmt.Fprintf(&b, "\n    container %s: %s", cs.Name, line)
			}
		}
	}
	var warnings []corev1.Event
	for _, e := range events {
		if e.Type != corev1.EventTypeWarning {
			continue
		}
		io := e.InvolvedObject
		if (io.Kind == "Pod" && names[io.Name]) || (io.Kind == obj.Kind && io.Name == obj.Name) {
			warnings = append(warnings, e)
		}
	}
	slices.SortStableFunc(warnings, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	if len(warnings) > maxEvents {
		warnings = warnings[len(warnings)-maxEvents:]
	}
	if len(warnings) > 0 {
		b.WriteString("\n  recent warnings:")
		for _, e := range warnings {
			count := ""
			if e.Count > 1 {
				count = fmt.Sprintf(" (x%d)", e.Count)
			}
			fmt.Fprintf(&b, "\n    %s/%s: %s%s", strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, reasonMessage(e.Reason, e.Message), count)
		}
	}
	return b.String()
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerState(cs corev1.ContainerStatus) string {
	switch {
	case cs.State.Waiting != nil:
		s := "waiting: " + reasonMessage(cs.State.Waiting.Reason, cs.State.Waiting.Message)
		if t := cs.LastTerminationState.Terminated; t != nil {
			s += "; last exit: " + terminated(t)
		}
		if cs.RestartCount > 0 {
			s += fmt.Sprintf(" (%d restarts)", cs.RestartCount)
		}
		return s
	case cs.State.Terminated != nil:
		return "terminated: " + terminated(cs.State.Terminated)
	case cs.State.Running != nil:
		return "running, not ready (readiness probe failing?)"
	default:
		return ""
	}
}

func terminated(t *corev1.ContainerStateTerminated) string {
	reason := t.Reason
	if reason == "" {
		reason = "exited"
	}
	return fmt.Sprintf("%s (exit code %d)%s", reason, t.ExitCode, suffix(t.Message))
}

func reasonMessage(reason, msg string) string {
	if reason == "" {
		reason = "unknown reason"
	}
	return reason + suffix(msg)
}

func suffix(msg string) string {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return ""
	}
	return ": " + msg
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	default:
		return e.FirstTimestamp.Time
	}
}
