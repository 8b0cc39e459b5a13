package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// indexNodeServiceAccount indexes the pods that count by node, namespace
// and service account.
const indexNodeServiceAccount = "node-namespace-serviceaccount"

// PodIndex is a PodLookup over every pod in the cluster, kept by a shared
// informer. Only pods that are scheduled (have a node) and not terminated
// (phase neither Succeeded nor Failed) count: a finished pod runs nowhere,
// so its node proxy needs no certificate for it.
type PodIndex struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	cancel   context.CancelFunc
	stopOnce sync.Once
}

var _ PodLookup = (*PodIndex)(nil)

// NewPodIndex starts an informer on the pods of all namespaces. It runs
// until ctx is done or Stop is called; lookups answer false until
// WaitForSync returns.
func NewPodIndex(ctx context.Context, client kubernetes.Interface, log *slog.Logger) (*PodIndex, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The index keeps a slim copy of each pod: a large cluster's full pod
	// specs would cost istiod far more memory than the few fields it reads.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(slimPod))
	informer := factory.Core().V1().Pods().Informer()
	if err := informer.AddIndexers(cache.Indexers{indexNodeServiceAccount: nodeServiceAccountIndex}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	if err := informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		// Typically missing RBAC (list/watch pods) or an API server restart.
		log.Warn("pod watch failed; retrying", "error", err)
	}); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	return &PodIndex{factory: factory, informer: informer, cancel: cancel}, nil
}

// WaitForSync waits until the index holds every pod the API server listed,
// or ctx is done.
func (p *PodIndex) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pod index sync: %w", err)
		}
		return errors.New("pod index sync: stopped")
	}
	return nil
}

// Stop stops the informer and waits for its goroutines to end.
func (p *PodIndex) Stop() {
	p.stopOnce.Do(func() {
		p.cancel()
		p.factory.Shutdown()
	})
}

// ServiceAccountHasPodOnNode implements PodLookup.
func (p *PodIndex) ServiceAccountHasPodOnNode(namespace, serviceAccount, node string) bool {
	if namespace == "" || serviceAccount == "" || node == "" {
		return false
	}
	pods, err := p.informer.GetIndexer().ByIndex(indexNodeServiceAccount, nodeServiceAccountKey(node, namespace, serviceAccount))
	return err == nil && len(pods) > 0
}

// NodeOfPod implements PodLookup.
func (p *PodIndex) NodeOfPod(namespace, name, uid string) (string, bool) {
	obj, exists, err := p.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return "", false
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || !podCounts(pod) || (uid != "" && string(pod.UID) != uid) {
		return "", false
	}
	return pod.Spec.NodeName, true
}

func nodeServiceAccountKey(node, namespace, serviceAccount string) string {
	// None of the three may contain a slash, so the key is unambiguous.
	return node + "/" + namespace + "/" + serviceAccount
}

func nodeServiceAccountIndex(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !podCounts(pod) {
		return nil, nil
	}
	return []string{nodeServiceAccountKey(pod.Spec.NodeName, pod.Namespace, serviceAccountOf(pod))}, nil
}

// podCounts reports whether pod runs, or will run, on its node.
func podCounts(pod *corev1.Pod) bool {
	return pod.Spec.NodeName != "" && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	// Admission sets it; an unset one means the namespace's default.
	return "default"
}

// slimPod keeps only what the index reads.
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		// A tombstone of an already slim pod.
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            pod.Name,
			Namespace:       pod.Namespace,
			UID:             pod.UID,
			ResourceVersion: pod.ResourceVersion,
		},
		Spec: corev1.PodSpec{
			NodeName:           pod.Spec.NodeName,
			ServiceAccountName: pod.Spec.ServiceAccountName,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}, nil
}
