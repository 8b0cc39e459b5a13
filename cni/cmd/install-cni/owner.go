package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// ownerWatch follows the agent's own DaemonSet for as long as the agent
// runs, so that at SIGTERM it knows whether the DaemonSet was deleted.
// Asking only then is not enough: an uninstall (helm uninstall, istioctl
// uninstall) deletes the DaemonSet and, right after, the agent's RBAC and
// ServiceAccount, so by the time the pods are stopped the question may be
// refused. A watch opened while the agent was allowed keeps delivering.
type ownerWatch struct {
	client         kubernetes.Interface
	namespace, pod string
	log            *slog.Logger
	// name is the DaemonSet's name, once read from the pod's owner.
	name atomic.Pointer[string]
	// deleted is set once the DaemonSet was seen deleted or being deleted.
	deleted atomic.Bool
}

// run follows the DaemonSet until ctx ends, reopening the watch when it
// closes and retrying with backoff when the API server refuses.
func (w *ownerWatch) run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := w.follow(ctx)
		if ctx.Err() != nil || w.deleted.Load() {
			return
		}
		if err != nil {
			w.log.Warn("watch of the agent's DaemonSet failed; retrying", "error", err, "retry_in", backoff.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
}

// follow runs one watch of the DaemonSet; it returns nil when the watch
// ends normally (the server closes watches now and then).
func (w *ownerWatch) follow(ctx context.Context) error {
	name := w.name.Load()
	if name == nil {
		pod, err := w.client.CoreV1().Pods(w.namespace).Get(ctx, w.pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, ref := range pod.OwnerReferences {
			if ref.Kind == "DaemonSet" {
				n := ref.Name
				name = &n
				w.name.Store(name)
				break
			}
		}
		if name == nil {
			w.log.Info("the agent's pod has no DaemonSet owner; its stop never uninstalls the plugin")
			<-ctx.Done()
			return nil
		}
	}
	list, err := w.client.AppsV1().DaemonSets(w.namespace).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + *name})
	if err != nil {
		return err
	}
	if len(list.Items) == 0 || list.Items[0].DeletionTimestamp != nil {
		w.deleted.Store(true)
		return nil
	}
	wi, err := w.client.AppsV1().DaemonSets(w.namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + *name, ResourceVersion: list.ResourceVersion,
	})
	if err != nil {
		return err
	}
	defer wi.Stop()
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			// A deletion already delivered still counts.
			for {
				select {
				case ev, ok := <-wi.ResultChan():
					if !ok {
						return nil
					}
					if ev.Type == watch.Deleted {
						w.deleted.Store(true)
					}
				default:
					return nil
				}
			}
		case ev, ok = <-wi.ResultChan():
		}
		if !ok {
			return nil
		}
		switch ev.Type {
		case watch.Deleted:
			w.deleted.Store(true)
			return nil
		case watch.Error:
			return apierrors.FromObject(ev.Object)
		case watch.Modified, watch.Added:
			if m, err := meta.Accessor(ev.Object); err == nil && m.GetDeletionTimestamp() != nil {
				w.deleted.Store(true)
				return nil
			}
		}
	}
}

// uninstalling reports whether the agent stops for good: its DaemonSet
// is deleted or being deleted. A restart or an upgrade keeps the plugin,
// so new pods stay fail-closed rather than start uncaptured, and so does
// any doubt.
//
// While the API server answers, the answer decides, from the pod's owner
// now: a DaemonSet deleted with --cascade=orphan and recreated (or
// replaced under the same name) owns the pod again, or will, and keeps
// the plugin; only when the pod's DaemonSet is gone or being deleted does
// the plugin go. When the API server refuses (an uninstall takes the
// agent's RBAC away with its DaemonSet), what the watch saw decides.
func (w *ownerWatch) uninstalling() bool {
	// Shorter than the pod's termination grace period.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	gone, err := w.ownerGone(ctx)
	if err == nil {
		return gone
	}
	if w.deleted.Load() {
		w.log.Info("the API server refuses, but the agent's DaemonSet was seen deleted", "error", err)
		return true
	}
	w.log.Warn("cannot tell a restart from an uninstall; keeping the plugin", "error", err)
	return false
}

// ownerGone asks the API server whether the DaemonSet that owns the pod
// now is gone or being deleted. A pod with no DaemonSet owner (orphaned,
// waiting to be adopted) is not an uninstall.
func (w *ownerWatch) ownerGone(ctx context.Context) (bool, error) {
	if w.pod == "" || w.namespace == "" {
		return false, nil
	}
	pod, err := w.client.CoreV1().Pods(w.namespace).Get(ctx, w.pod, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "DaemonSet" {
		return false, nil
	}
	ds, err := w.client.AppsV1().DaemonSets(w.namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, err
	case ds.UID != ref.UID:
		// Replaced under the same name: the new DaemonSet's agent takes over.
		return false, nil
	}
	return ds.DeletionTimestamp != nil, nil
}
