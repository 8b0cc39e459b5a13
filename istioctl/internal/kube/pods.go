package kube

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Component labels, as the mesh's charts set them.
const (
	ZtunnelSelector = "app=ztunnel"
	IstiodSelector  = "app=istiod"
	CNISelector     = "app=istio-cni-node"
)

// SplitPodArg splits Istio's "pod[.namespace]" argument; namespace is
// defaultNS when the argument has none.
func SplitPodArg(arg, defaultNS string) (name, namespace string) {
	name, namespace, ok := strings.Cut(arg, ".")
	if !ok || namespace == "" {
		return name, defaultNS
	}
	return name, namespace
}

// SelectPod picks one of pods (the component's pods in namespace) the way
// istioctl does: by name when name is set, else the one on node when node
// is set, else the first running pod by name.
func SelectPod(pods []corev1.Pod, component, namespace, name, node string) (*corev1.Pod, error) {
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	if len(sorted) == 0 {
		return nil, fmt.Errorf("no %s pods in namespace %s: is the mesh installed (istioctl install), or is it in another namespace (-i)?", component, namespace)
	}
	var names, nodes []string
	for _, p := range sorted {
		names = append(names, p.Name)
		if p.Spec.NodeName != "" {
			nodes = append(nodes, p.Spec.NodeName)
		}
	}
	switch {
	case name != "":
		for i := range sorted {
			if sorted[i].Name == name {
				return &sorted[i], nil
			}
		}
		return nil, fmt.Errorf("no %s pod %q in namespace %s (%s pods: %s)", component, name, namespace, component, strings.Join(names, ", "))
	case node != "":
		var onNode []*corev1.Pod
		for i := range sorted {
			if sorted[i].Spec.NodeName == node {
				onNode = append(onNode, &sorted[i])
			}
		}
		if len(onNode) == 0 {
			return nil, fmt.Errorf("no %s pod on node %q (%s runs on: %s)", component, node, component, strings.Join(nodes, ", "))
		}
		for _, p := range onNode {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				return p, nil
			}
		}
		return onNode[0], nil
	default:
		for i := range sorted {
			if sorted[i].Status.Phase == corev1.PodRunning && sorted[i].DeletionTimestamp == nil {
				return &sorted[i], nil
			}
		}
		return nil, fmt.Errorf("no running %s pod in namespace %s (%s pods: %s)", component, namespace, component, podPhases(sorted))
	}
}

func podPhases(pods []corev1.Pod) string {
	var out []string
	for _, p := range pods {
		out = append(out, fmt.Sprintf("%s %s", p.Name, p.Status.Phase))
	}
	return strings.Join(out, ", ")
}

// ImageTag returns the tag of image ("hub/name:tag" or "...@sha256:..."),
// "unknown" when it has none.
func ImageTag(image string) string {
	if at := strings.Index(image, "@"); at >= 0 {
		image = image[:at]
	}
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[colon+1:]
	}
	return "unknown"
}
