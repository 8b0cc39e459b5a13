package ca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// The ConfigMap through which Istio publishes the mesh root to every
// namespace, for workloads and proxies that verify istiod or their peers.
const (
	RootCertConfigMap = "istio-ca-root-cert"
	RootCertKey       = "root-cert.pem"
)

// rootCertLabels are set on ConfigMaps we create, as Istio does.
var rootCertLabels = map[string]string{"istio.io/config": "true"}

// RootPublisher keeps the ConfigMap istio-ca-root-cert, key root-cert.pem,
// equal to RootPEM in every namespace: it creates it where it is missing
// and puts it back where someone changed or deleted it. It leaves alone
// namespaces being deleted, and other keys of the ConfigMap. Set the fields,
// then call Run.
type RootPublisher struct {
	Client  kubernetes.Interface
	RootPEM []byte
	// NamespaceSelector restricts publishing to the namespaces it matches,
	// as Istio's discovery selectors do; nil means every namespace.
	NamespaceSelector labels.Selector
	Log               *slog.Logger

	namespaces corelisters.NamespaceLister
	configMaps corelisters.ConfigMapLister
}

// Run publishes until ctx is done. It returns an error only when the
// publisher is not configured. Call it once.
func (p *RootPublisher) Run(ctx context.Context) error {
	if p.Client == nil || len(bytes.TrimSpace(p.RootPEM)) == 0 {
		return errors.New("root publisher: client and root certificate required")
	}
	selector := p.NamespaceSelector
	if selector == nil {
		selector = labels.Everything()
	}
	nsInformer := coreinformers.NewFilteredNamespaceInformer(p.Client, 0, cache.Indexers{}, func(o *metav1.ListOptions) {
		o.LabelSelector = selector.String()
	})
	cmInformer := coreinformers.NewFilteredConfigMapInformer(p.Client, metav1.NamespaceAll, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", RootCertConfigMap).String()
		})
	p.namespaces = corelisters.NewNamespaceLister(nsInformer.GetIndexer())
	p.configMaps = corelisters.NewConfigMapLister(cmInformer.GetIndexer())

	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 5*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "root-publisher"})
	enqueueNamespace := func(obj any) {
		if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			queue.Add(name.Name)
		}
	}
	enqueueOwner := func(obj any) {
		// The field selector is the API server's; check the name anyway.
		if name, err := cache.DeletionHandlingObjectToName(obj); err == nil && name.Name == RootCertConfigMap {
			queue.Add(name.Namespace)
		}
	}
	if _, err := nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNamespace,
		UpdateFunc: func(_, obj any) { enqueueNamespace(obj) },
	}); err != nil {
		return fmt.Errorf("root publisher: %w", err)
	}
	if _, err := cmInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueOwner,
		UpdateFunc: func(_, obj any) { enqueueOwner(obj) },
		DeleteFunc: enqueueOwner,
	}); err != nil {
		return fmt.Errorf("root publisher: %w", err)
	}
	for _, inf := range []cache.SharedIndexInformer{nsInformer, cmInformer} {
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			p.log().Warn("watch failed; retrying", "error", err)
		}); err != nil {
			return fmt.Errorf("root publisher: %w", err)
		}
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { nsInformer.RunWithContext(ctx) })
	wg.Go(func() { cmInformer.RunWithContext(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		queue.ShutDown()
	})
	if !cache.WaitForCacheSync(ctx.Done(), nsInformer.HasSynced, cmInformer.HasSynced) {
		return nil
	}
	p.log().Info("publishing the root certificate", "configmap", RootCertConfigMap, "namespaces", selector.String())
	for {
		ns, shutdown := queue.Get()
		if shutdown {
			return nil
		}
		if err := p.reconcile(ctx, ns); err != nil {
			if ctx.Err() == nil {
				p.log().Warn("root certificate not published; retrying", "namespace", ns, "error", err, "attempt", queue.NumRequeues(ns)+1)
			}
			queue.AddRateLimited(ns)
		} else {
			queue.Forget(ns)
		}
		queue.Done(ns)
	}
}

// reconcile makes the root ConfigMap of namespace name right.
func (p *RootPublisher) reconcile(ctx context.Context, name string) error {
	ns, err := p.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil // deleted, or not selected
	}
	if err != nil {
		return err
	}
	if p.NamespaceSelector != nil && !p.NamespaceSelector.Matches(labels.Set(ns.Labels)) {
		return nil
	}
	if ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating {
		p.log().Debug("skipping a namespace being deleted", "namespace", name)
		return nil
	}
	root := string(p.RootPEM)
	cm, err := p.configMaps.ConfigMaps(name).Get(RootCertConfigMap)
	switch {
	case apierrors.IsNotFound(err):
		_, err = p.Client.CoreV1().ConfigMaps(name).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Namespace: name, Labels: rootCertLabels},
			Data:       map[string]string{RootCertKey: root},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			p.log().Info("created the root certificate ConfigMap", "namespace", name)
		case apierrors.IsAlreadyExists(err):
			// Our cache is behind; its event will bring us back here.
			return nil
		case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) || apierrors.IsNotFound(err):
			p.log().Debug("skipping a namespace being deleted", "namespace", name)
			return nil
		default:
			return fmt.Errorf("create configmap %s/%s: %w", name, RootCertConfigMap, err)
		}
		return nil
	case err != nil:
		return err
	}
	if got, ok := cm.Data[RootCertKey]; ok && got == root {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RootCertKey] = root
	_, err = p.Client.CoreV1().ConfigMaps(name).Update(ctx, cm, metav1.UpdateOptions{})
	switch {
	case err == nil:
		p.log().Info("restored the root certificate ConfigMap, which differed from the root", "namespace", name)
		return nil
	case apierrors.IsNotFound(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		// Deleted meanwhile: its delete event brings us back here.
		return nil
	default:
		// A conflict means our copy is stale: retry from the newer one.
		return fmt.Errorf("update configmap %s/%s: %w", name, RootCertConfigMap, err)
	}
}

func (p *RootPublisher) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}
