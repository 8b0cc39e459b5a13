// Package controller keeps istiod's Address resources equal to the
// translation of the cluster's Namespaces, Pods and Services.
//
// Shared informers feed a work queue keyed by object, so a burst of changes
// to one object is translated once. Each key is recomputed from the
// informers' current state (declaratively: what the object should give
// now, not what changed), and the result is stored in an ads.Cache, which
// pushes only resources whose bytes changed. A change reaches only the keys
// it can affect: a pod its own workload; a Service itself and the workloads
// of its namespace's pods (their services maps); a namespace's labels its
// Services and pods.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/anypb"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/workloads"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// AddressType is the type URL of the resources the controller maintains.
const AddressType = "type.googleapis.com/istio.workload.Address"

// kind is the Kubernetes kind a queue key names.
type kind uint8

const (
	kindPod kind = iota
	kindService
)

func (k kind) String() string {
	if k == kindPod {
		return "Pod"
	}
	return "Service"
}

// key names one object whose resource must be recomputed.
type key struct {
	kind      kind
	namespace string
	name      string
}

// Controller translates the cluster into an ads.Cache. Create it with New,
// then call Run once.
type Controller struct {
	cache *ads.Cache
	mesh  workloads.MeshConfig
	log   *slog.Logger

	factory    informers.SharedInformerFactory
	namespaces corelisters.NamespaceLister
	pods       corelisters.PodLister
	services   corelisters.ServiceLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[key]

	// owned maps each key to the resource name it currently has in the
	// cache. Only the single worker touches it.
	owned map[key]string
	ready atomic.Bool
}

// New returns a controller that watches client and writes cache. A nil log
// discards.
func New(client kubernetes.Interface, c *ads.Cache, mesh workloads.MeshConfig, log *slog.Logger) (*Controller, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := informers.NewSharedInformerFactory(client, 0)
	ctl := &Controller{
		cache:   c,
		mesh:    mesh,
		log:     log,
		factory: f,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "istiod-addresses"}),
		owned: map[key]string{},
	}
	nsInf := f.Core().V1().Namespaces()
	podInf := f.Core().V1().Pods()
	svcInf := f.Core().V1().Services()
	ctl.namespaces, ctl.pods, ctl.services = nsInf.Lister(), podInf.Lister(), svcInf.Lister()

	regs := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{podInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.enqueue(kindPod, obj) },
			UpdateFunc: func(_, obj any) { ctl.enqueue(kindPod, obj) },
			DeleteFunc: func(obj any) { ctl.enqueue(kindPod, obj) },
		}},
		{svcInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    ctl.serviceChanged,
			UpdateFunc: func(_, obj any) { ctl.serviceChanged(obj) },
			DeleteFunc: ctl.serviceChanged,
		}},
		{nsInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: ctl.namespaceChanged,
			UpdateFunc: func(oldObj, obj any) {
				o, ok1 := oldObj.(*corev1.Namespace)
				n, ok2 := obj.(*corev1.Namespace)
				if ok1 && ok2 && maps.Equal(o.Labels, n.Labels) {
					return
				}
				ctl.namespaceChanged(obj)
			},
			DeleteFunc: ctl.namespaceChanged,
		}},
	}
	for _, r := range regs {
		reg, err := r.inf.AddEventHandler(r.h)
		if err != nil {
			return nil, fmt.Errorf("controller: add event handler: %w", err)
		}
		ctl.synced = append(ctl.synced, r.inf.HasSynced, reg.HasSynced)
	}
	return ctl, nil
}

// HasSynced reports whether the informers have listed the cluster and the
// controller has translated everything they listed.
func (c *Controller) HasSynced() bool { return c.ready.Load() }

// Run watches the cluster and updates the cache until ctx is done. It
// returns an error only if the informers cannot sync.
func (c *Controller) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()

	done := make(chan struct{})
	go func() {
		defer close(done)
		for c.processNext(ctx) {
		}
	}()
	defer func() { <-done }()
	defer c.queue.ShutDown()

	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return errors.New("controller: informers did not sync")
	}
	// Everything listed is queued by now; ready once it is translated.
	if !cache.WaitForCacheSync(ctx.Done(), func() bool { return c.queue.Len() == 0 }) {
		return errors.New("controller: stopped before the initial translation")
	}
	c.ready.Store(true)
	c.log.Info("synced", "addresses", len(c.cache.Names(AddressType)))
	<-ctx.Done()
	return nil
}

// enqueue queues the object obj (possibly a tombstone) as kind k.
func (c *Controller) enqueue(k kind, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	ns, name, ok := objectName(obj)
	if !ok {
		return
	}
	c.queue.Add(key{kind: k, namespace: ns, name: name})
}

func objectName(obj any) (namespace, name string, ok bool) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return o.Namespace, o.Name, true
	case *corev1.Service:
		return o.Namespace, o.Name, true
	case *corev1.Namespace:
		return "", o.Name, true
	}
	return "", "", false
}

// serviceChanged queues the Service and the pods of its namespace.
func (c *Controller) serviceChanged(obj any) {
	c.enqueue(kindService, obj)
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if ns, _, ok := objectName(obj); ok {
		c.enqueueNamespacePods(ns)
	}
}

// namespaceChanged queues the Services and pods of the namespace.
func (c *Controller) namespaceChanged(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	_, ns, ok := objectName(obj)
	if !ok {
		return
	}
	svcs, _ := c.services.Services(ns).List(labels.Everything())
	for _, s := range svcs {
		c.queue.Add(key{kind: kindService, namespace: s.Namespace, name: s.Name})
	}
	c.enqueueNamespacePods(ns)
}

func (c *Controller) enqueueNamespacePods(ns string) {
	pods, _ := c.pods.Pods(ns).List(labels.Everything())
	for _, p := range pods {
		c.queue.Add(key{kind: kindPod, namespace: p.Namespace, name: p.Name})
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	k, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(k)
	if err := c.sync(k); err != nil {
		c.log.Warn("translation failed; retrying", "kind", k.kind.String(), "namespace", k.namespace, "name", k.name, "error", err)
		if ctx.Err() == nil {
			c.queue.AddRateLimited(k)
		}
		return true
	}
	c.queue.Forget(k)
	return true
}

// sync recomputes the resource of k and stores it, or removes it when the
// object is gone or does not translate.
func (c *Controller) sync(k key) error {
	addr, err := c.translate(k)
	if err != nil {
		return err
	}
	old, had := c.owned[k]
	if addr == nil {
		if had {
			c.cache.Delete(AddressType, old)
			delete(c.owned, k)
		}
		return nil
	}
	body, err := ads.MarshalAny(addr)
	if err != nil {
		return err
	}
	name := workloads.ResourceName(addr)
	var removed []string
	if had && old != name {
		removed = []string{old}
	}
	c.cache.Apply(AddressType, map[string]*anypb.Any{name: body}, removed)
	c.owned[k] = name
	return nil
}

// translate returns the Address k should have now, or nil for none.
func (c *Controller) translate(k key) (*workloadapi.Address, error) {
	ns, err := c.namespaces.Get(k.namespace)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	switch k.kind {
	case kindPod:
		pod, err := c.pods.Pods(k.namespace).Get(k.name)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		svcs, err := c.services.Services(k.namespace).List(labels.Everything())
		if err != nil {
			return nil, err
		}
		w, ok := workloads.Workload(pod, ns, svcs, c.mesh)
		if !ok {
			c.log.Debug("pod is not a workload", "namespace", k.namespace, "name", k.name,
				"phase", pod.Status.Phase, "pod_ip", pod.Status.PodIP, "host_network", pod.Spec.HostNetwork)
			return nil, nil
		}
		return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}, nil
	default:
		svc, err := c.services.Services(k.namespace).Get(k.name)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		s, ok := workloads.Service(svc, ns, c.mesh)
		if !ok {
			c.log.Debug("service is not translated", "namespace", k.namespace, "name", k.name, "type", svc.Spec.Type)
			return nil, nil
		}
		return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}, nil
	}
}
