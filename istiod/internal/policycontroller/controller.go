// Package policycontroller keeps istiod's istio.security.Authorization
// resources equal to the translation of the cluster's AuthorizationPolicies
// and PeerAuthentications (security.istio.io/v1), and reports on each
// resource, in a status condition, what ztunnel enforces of it.
//
// Policies are few next to pods, so every change rebuilds the whole
// policy.Set (one queue key: a burst of changes is one rebuild) and the
// cache pushes only resources whose bytes changed. Which Authorizations a
// workload lists depends on its labels, so the address controller asks the
// current Set (Attached) when it translates a pod, and is told (the
// listener set with OnAttachmentChange) which namespaces to recompute when
// a rebuild changes what their workloads may list.
package policycontroller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	securitylisters "istio.io/client-go/pkg/listers/security/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/bootstrap"
	"github.com/ambient-mesh/mesh/istiod/internal/policy"
)

// AuthorizationType is the type URL of the resources the controller
// maintains.
const AuthorizationType = "type.googleapis.com/istio.security.Authorization"

// GroupVersion is the API version the controller reads.
const GroupVersion = "security.istio.io/v1"

// ConditionType is the status condition the controller owns on each
// resource, as in Istio's ambient mode.
const ConditionType = "ZtunnelAccepted"

// Condition reasons.
const (
	ReasonAccepted         = "Accepted"
	ReasonUnsupportedValue = "UnsupportedValue"
)

// Controller translates the cluster's security resources into an
// ads.Cache. Create it with New, then call Run once.
type Controller struct {
	client istioclient.Interface
	cache  *ads.Cache
	log    *slog.Logger

	factory  istioinformers.SharedInformerFactory
	authz    securitylisters.AuthorizationPolicyLister
	peerAuth securitylisters.PeerAuthenticationLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[struct{}]

	root     atomic.Pointer[string]
	set      atomic.Pointer[policy.Set]
	built    atomic.Bool
	ready    atomic.Bool
	listenMu sync.Mutex
	listener func(all bool, namespaces []string)

	// owned are the resource names the controller has in the cache; only
	// the worker touches it.
	owned map[string]bool

	reportMu sync.Mutex
	reported map[policy.Ref]string // last logged summary per resource
}

// New returns a controller reading client, with rootNS as the mesh's root
// namespace. When the API server does not serve security.istio.io/v1 (the
// CRDs are not installed) the controller serves no policies and says so
// in the log. A nil log discards.
func New(client istioclient.Interface, disc discovery.DiscoveryInterface, c *ads.Cache, rootNS string, log *slog.Logger) (*Controller, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctl := &Controller{
		client: client,
		cache:  c,
		log:    log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[struct{}](),
			workqueue.TypedRateLimitingQueueConfig[struct{}]{Name: "istiod-policies"}),
		owned:    map[string]bool{},
		reported: map[policy.Ref]string{},
	}
	ctl.root.Store(&rootNS)
	ctl.set.Store(policy.Build(rootNS, nil, nil))

	served := true
	for _, r := range []string{"authorizationpolicies", "peerauthentications"} {
		ok, err := bootstrap.Served(disc, GroupVersion, r)
		if err != nil {
			return nil, err
		}
		served = served && ok
	}
	if !served {
		log.Warn("the security.istio.io/v1 CRDs are not installed: no AuthorizationPolicy or PeerAuthentication is enforced; install them and restart istiod")
		return ctl, nil
	}
	f := istioinformers.NewSharedInformerFactory(client, 0)
	apInf := f.Security().V1().AuthorizationPolicies()
	paInf := f.Security().V1().PeerAuthentications()
	ctl.factory, ctl.authz, ctl.peerAuth = f, apInf.Lister(), paInf.Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { ctl.queue.Add(struct{}{}) },
		UpdateFunc: func(any, any) { ctl.queue.Add(struct{}{}) },
		DeleteFunc: func(any) { ctl.queue.Add(struct{}{}) },
	}
	for _, inf := range []cache.SharedIndexInformer{apInf.Informer(), paInf.Informer()} {
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return nil, fmt.Errorf("policycontroller: add event handler: %w", err)
		}
		ctl.synced = append(ctl.synced, inf.HasSynced, reg.HasSynced)
	}
	return ctl, nil
}

// OnAttachmentChange sets the function told, after a rebuild, which
// namespaces' workloads may now list different Authorizations (all, or
// the ones named). Set it before Run.
func (c *Controller) OnAttachmentChange(f func(all bool, namespaces []string)) {
	c.listenMu.Lock()
	defer c.listenMu.Unlock()
	c.listener = f
}

// Attached returns the Authorization resource names a workload in
// namespace with labels must list, from the latest rebuild.
func (c *Controller) Attached(namespace string, labels map[string]string) []string {
	return c.set.Load().Attached(namespace, labels)
}

// SetRootNamespace changes the mesh's root namespace and rebuilds.
func (c *Controller) SetRootNamespace(ns string) {
	c.root.Store(&ns)
	c.queue.Add(struct{}{})
}

// HasSynced reports whether the informers have listed the cluster and the
// first rebuild is in the cache.
func (c *Controller) HasSynced() bool { return c.ready.Load() }

// Run watches the cluster and updates the cache until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c.processNext(ctx) {
		}
	}()
	defer func() { <-done }()
	defer c.queue.ShutDown()
	if c.factory == nil {
		c.queue.Add(struct{}{})
	} else {
		c.factory.Start(ctx.Done())
		defer c.factory.Shutdown()
		if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
			return errors.New("policycontroller: informers did not sync")
		}
		c.queue.Add(struct{}{})
	}
	if !cache.WaitForCacheSync(ctx.Done(), func() bool { return c.queue.Len() == 0 && c.built.Load() }) {
		return errors.New("policycontroller: stopped before the first rebuild")
	}
	c.ready.Store(true)
	c.log.Info("synced", "authorizations", len(c.cache.Names(AuthorizationType)))
	<-ctx.Done()
	return nil
}

func (c *Controller) processNext(ctx context.Context) bool {
	k, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(k)
	if err := c.rebuild(ctx); err != nil {
		c.log.Warn("policy rebuild incomplete; retrying", "error", err)
		if ctx.Err() == nil {
			c.queue.AddRateLimited(k)
		}
		return true
	}
	c.queue.Forget(k)
	return true
}
