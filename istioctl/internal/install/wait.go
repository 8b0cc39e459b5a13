package install

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// progress reads obj's readiness from the cluster, and the label selector
// of its pods for workloads.
func (in *Installer) progress(ctx context.Context, obj Object) (Progress, string, error) {
	switch obj.Kind {
	case "Deployment":
		d, err := in.Clients.Kube.AppsV1().Deployments(obj.Namespace).Get(ctx, obj.Name, metav1.GetOptions{})
		if err != nil {
			return Progress{}, "", err
		}
		sel, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		return DeploymentProgress(d), selString(sel), nil
	case "DaemonSet":
		ds, err := in.Clients.Kube.AppsV1().DaemonSets(obj.Namespace).Get(ctx, obj.Name, metav1.GetOptions{})
		if err != nil {
			return Progress{}, "", err
		}
		sel, _ := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		return DaemonSetProgress(ds), selString(sel), nil
	case "CustomResourceDefinition":
		u, err := in.Clients.Dynamic.Resource(crdGVR).Get(ctx, obj.Name, metav1.GetOptions{})
		if err != nil {
			return Progress{}, "", err
		}
		return CRDProgress(u), "", nil
	default:
		return Progress{Done: true}, "", nil
	}
}

func selString(s fmt.Stringer) string {
	if s == nil {
		return ""
	}
	return s.String()
}

// waitReady polls objs until all are ready, printing progress as it
// changes; on timeout it explains each object that is not ready.
func (in *Installer) waitReady(ctx context.Context, chartName string, objs []Object) error {
	if len(objs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	last := map[string]string{}
	report := func(key, s string) {
		if last[key] != s {
			fmt.Fprintf(in.Out, "  waiting for %s: %s\n", key, s)
			last[key] = s
		}
	}
	for {
		var pending []Object
		progs := map[Object]Progress{}
		sels := map[Object]string{}
		crds, crdsReady := 0, 0
		for _, o := range objs {
			p, sel, err := in.progress(ctx, o)
			switch {
			case apierrors.IsNotFound(err):
				p = Progress{Detail: "not found"}
			case (apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)) && ctx.Err() == nil:
				// Waiting will not change it.
				return fmt.Errorf("read %s: %w", o, err)
			case err != nil:
				// Retried until the deadline: the API server may be busy
				// or restarting. The timeout report carries the error.
				p = Progress{Detail: "unknown: " + err.Error()}
			}
			progs[o], sels[o] = p, sel
			if o.Kind == "CustomResourceDefinition" {
				// One line for all CRDs: a chart may hold dozens.
				crds++
				if p.Done {
					crdsReady++
				}
			}
			if p.Done {
				continue
			}
			pending = append(pending, o)
			if o.Kind != "CustomResourceDefinition" {
				report(o.String(), p.String())
			}
		}
		if crdsReady < crds {
			report("CRDs", fmt.Sprintf("%d/%d established", crdsReady, crds))
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return in.notReadyError(chartName, pending, progs, sels)
			}
			return ctx.Err()
		case <-time.After(in.poll()):
		}
	}
}

func (in *Installer) poll() time.Duration {
	if in.Poll > 0 {
		return in.Poll
	}
	return 2 * time.Second
}

// maxCRDsShown bounds the CRDs a readiness failure lists one by one.
const maxCRDsShown = 5

func (in *Installer) notReadyError(chartName string, pending []Object, progs map[Object]Progress, sels map[Object]string) error {
	// The wait's context is over; give the diagnosis a short one of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var parts []string
	crdsShown := 0
	for _, o := range pending {
		if o.Kind == "CustomResourceDefinition" {
			if crdsShown++; crdsShown > maxCRDsShown {
				continue
			}
		}
		var pods []corev1.Pod
		if sel := sels[o]; sel != "" {
			if l, err := in.Clients.Kube.CoreV1().Pods(o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel}); err == nil {
				pods = l.Items
			}
		}
		var events []corev1.Event
		if o.Namespace != "" {
			if l, err := in.Clients.Kube.CoreV1().Events(o.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"}); err == nil {
				events = l.Items
			}
		}
		parts = append(parts, DescribeNotReady(o, progs[o], pods, events))
	}
	if crdsShown > maxCRDsShown {
		parts = append(parts, fmt.Sprintf("and %d more CRDs not established", crdsShown-maxCRDsShown))
	}
	return fmt.Errorf("%s: timed out after %s waiting for readiness:\n%s", ReleaseName(chartName), in.Timeout, strings.Join(parts, "\n"))
}

// waitPodsGone polls until no pod matches any of sels in namespace.
func (in *Installer) waitPodsGone(ctx context.Context, release, namespace string, sels map[Object]string) error {
	if len(sels) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	last := map[Object]int{}
	for {
		left := map[Object][]corev1.Pod{}
		for o, sel := range sels {
			l, err := in.Clients.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("list pods of %s: %w", o, err)
			}
			if n := len(l.Items); n > 0 {
				left[o] = l.Items
				if last[o] != n {
					fmt.Fprintf(in.Out, "  waiting for %d pods of %s to go\n", n, o)
					last[o] = n
				}
			}
		}
		if len(left) == 0 && ctx.Err() == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			var names []string
			for o, pods := range left {
				for _, p := range pods {
					names = append(names, fmt.Sprintf("%s (%s, %s)", p.Name, o, p.Status.Phase))
				}
			}
			return fmt.Errorf("%s: timed out after %s waiting for pods to go: %s", release, in.Timeout, strings.Join(names, ", "))
		case <-time.After(in.poll()):
		}
	}
}
