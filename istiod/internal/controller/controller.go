// Package controller keeps istiod's Address resources equal to the
// translation of the cluster's Namespaces, Pods, Services, ServiceEntries
// and waypoint Gateways.
//
// Shared informers feed a work queue keyed by object, so a burst of changes
// to one object is translated once. Each key is recomputed from the
// informers' current state (declaratively: what the object should give
// now, not what changed), and the result is stored in an ads.Cache, which
// pushes only resources whose bytes changed.
//
// A change queues only the keys whose translation reads what changed,
// found through informer indexes rather than by scanning:
//   - a pod: its own workload;
//   - an EndpointSlice: the workloads of its endpoints that are not pods
//     (those of Services without a selector);
//   - a Service or ServiceEntry: itself, and the pods its old or new
//     selector picks (their Workload.services) and, for a Service, its
//     EndpointSlices, only when the selector, ports or type changed;
//   - a namespace: its pods when istio.io/dataplane-mode changed; its pods,
//     Services and ServiceEntries when its waypoint labels changed; on any
//     other label change, only those whose waypoint is in another namespace
//     (a Gateway may admit namespaces by label);
//   - a Gateway: the pods, Services and ServiceEntries that name it with
//     istio.io/use-waypoint, on themselves or through their namespace.
//
// The ServiceEntry and Gateway informers run only when the API server
// serves those resources (their CRDs are installed when istiod starts).
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/anypb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	networkinglisters "istio.io/client-go/pkg/listers/networking/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/bootstrap"
	"github.com/ambient-mesh/mesh/istiod/internal/workloads"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
)

// AddressType is the type URL of the resources the controller maintains.
const AddressType = "type.googleapis.com/istio.workload.Address"

// The custom resources the controller reads when they are served.
const (
	gatewayGroupVersion      = "gateway.networking.k8s.io/v1"
	gatewayResource          = "gateways"
	serviceEntryGroupVersion = "networking.istio.io/v1"
	serviceEntryResource     = "serviceentries"
)

// kind is the Kubernetes kind a queue key names.
type kind uint8

const (
	kindPod kind = iota
	kindService
	kindServiceEntry
	kindEndpointSlice
)

func (k kind) String() string {
	switch k {
	case kindPod:
		return "Pod"
	case kindService:
		return "Service"
	case kindServiceEntry:
		return "ServiceEntry"
	default:
		return "EndpointSlice"
	}
}

// key names one object whose resources must be recomputed.
type key struct {
	kind      kind
	namespace string
	name      string
}

// Controller translates the cluster into an ads.Cache. Create it with New,
// then call Run once.
type Controller struct {
	cache *ads.Cache
	mesh  atomic.Pointer[workloads.MeshConfig]
	log   *slog.Logger

	factories []interface{ Start(<-chan struct{}) }
	shutdowns []func()
	// informers are run directly rather than by a factory.
	informers  []cache.SharedIndexInformer
	namespaces corelisters.NamespaceLister
	pods       corelisters.PodLister
	services   corelisters.ServiceLister
	nodes      corelisters.NodeLister
	slices     discoverylisters.EndpointSliceLister
	entries    networkinglisters.ServiceEntryLister // nil: not served
	gateways   gatewaylisters.GatewayLister         // nil: not served
	nsIndex    cache.Indexer
	podIndex   cache.Indexer
	svcIndex   cache.Indexer
	sliceIndex cache.Indexer
	seIndex    cache.Indexer // nil: not served
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[key]

	// Only the single worker touches these. owned maps each key to the
	// resource names it has in the cache; owners is the reverse, so a name
	// two objects produce (a ServiceEntry host equal to a Service's
	// hostname) stays while either still produces it. notes holds the
	// explanations last logged for a key, so they are logged on change.
	owned  map[key][]string
	owners map[string]map[key]struct{}
	notes  map[key]string

	translations atomic.Int64
	ready        atomic.Bool
	policies     atomic.Pointer[PolicyAttacher]
}

// PolicyAttacher answers which istio.security.Authorization resources a
// workload in namespace with labels must list in
// Workload.authorization_policies (the policy controller does).
type PolicyAttacher interface {
	Attached(namespace string, labels map[string]string) []string
}

// SetPolicies makes pods' workloads list the Authorizations p attaches to
// them. Call it before Run; without it workloads list none.
func (c *Controller) SetPolicies(p PolicyAttacher) { c.policies.Store(&p) }

// PoliciesChanged re-queues the pods whose listed Authorizations may have
// changed: every pod when all is set, else those of the namespaces named.
// Safe to call from any goroutine.
func (c *Controller) PoliciesChanged(all bool, namespaces []string) {
	if all {
		pods, _ := c.pods.List(labels.Everything())
		c.enqueuePods(pods)
		return
	}
	for _, ns := range namespaces {
		pods, _ := c.pods.Pods(ns).List(labels.Everything())
		c.enqueuePods(pods)
	}
}

// New returns a controller that watches the cluster through clients and
// writes cache. The ServiceEntry and Gateway watches start only if the API
// server serves those resources; without them there are no ServiceEntries
// and no waypoint Gateways. A nil log discards.
func New(clients *bootstrap.Clients, c *ads.Cache, mesh workloads.MeshConfig, log *slog.Logger) (*Controller, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctl := &Controller{
		cache: c,
		log:   log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "istiod-addresses"}),
		owned:  map[key][]string{},
		owners: map[string]map[key]struct{}{},
		notes:  map[key]string{},
	}
	ctl.mesh.Store(&mesh)

	type registration struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}
	var regs []registration

	kf := informers.NewSharedInformerFactory(clients.Kube, 0)
	ctl.factories = append(ctl.factories, kf)
	ctl.shutdowns = append(ctl.shutdowns, kf.Shutdown)
	nsInf, podInf, svcInf := kf.Core().V1().Namespaces(), kf.Core().V1().Pods(), kf.Core().V1().Services()
	sliceInf := kf.Discovery().V1().EndpointSlices()
	nodeInf := kf.Core().V1().Nodes()
	ctl.namespaces, ctl.pods, ctl.services, ctl.slices = nsInf.Lister(), podInf.Lister(), svcInf.Lister(), sliceInf.Lister()
	ctl.nodes = nodeInf.Lister()
	for _, ix := range []struct {
		inf cache.SharedIndexInformer
		ixs cache.Indexers
	}{
		{nsInf.Informer(), cache.Indexers{indexWaypoint: namespaceWaypointIndex}},
		{podInf.Informer(), cache.Indexers{indexLabels: podLabelIndex, indexWaypoint: objectWaypointIndex, indexCrossNamespace: crossNamespaceIndex, indexNode: podNodeIndex}},
		{svcInf.Informer(), cache.Indexers{indexSelector: serviceSelectorIndex, indexWaypoint: objectWaypointIndex, indexCrossNamespace: crossNamespaceIndex}},
		{sliceInf.Informer(), cache.Indexers{indexService: sliceServiceIndex}},
	} {
		if err := ix.inf.AddIndexers(ix.ixs); err != nil {
			return nil, fmt.Errorf("controller: add indexers: %w", err)
		}
	}
	ctl.nsIndex, ctl.podIndex, ctl.svcIndex = nsInf.Informer().GetIndexer(), podInf.Informer().GetIndexer(), svcInf.Informer().GetIndexer()
	ctl.sliceIndex = sliceInf.Informer().GetIndexer()
	regs = append(regs,
		registration{podInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.enqueue(kindPod, obj) },
			UpdateFunc: func(_, obj any) { ctl.enqueue(kindPod, obj) },
			DeleteFunc: func(obj any) { ctl.enqueue(kindPod, obj) },
		}},
		registration{svcInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.serviceChanged(nil, obj) },
			UpdateFunc: ctl.serviceChanged,
			DeleteFunc: func(obj any) { ctl.serviceChanged(obj, nil) },
		}},
		registration{sliceInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.enqueue(kindEndpointSlice, obj) },
			UpdateFunc: func(_, obj any) { ctl.enqueue(kindEndpointSlice, obj) },
			DeleteFunc: func(obj any) { ctl.enqueue(kindEndpointSlice, obj) },
		}},
		registration{nodeInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.nodeChanged(nil, obj) },
			UpdateFunc: ctl.nodeChanged,
		}},
		registration{nsInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.namespaceChanged(nil, obj) },
			UpdateFunc: ctl.namespaceChanged,
			DeleteFunc: func(obj any) { ctl.namespaceChanged(obj, nil) },
		}},
	)

	served, err := bootstrap.Served(clients.Kube.Discovery(), serviceEntryGroupVersion, serviceEntryResource)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if served && clients.Istio != nil {
		seInf := newServiceEntryInformer(clients.Istio)
		if err := seInf.AddIndexers(cache.Indexers{
			indexSelector: serviceEntrySelectorIndex, indexWaypoint: objectWaypointIndex, indexCrossNamespace: crossNamespaceIndex,
		}); err != nil {
			return nil, fmt.Errorf("controller: add indexers: %w", err)
		}
		ctl.informers = append(ctl.informers, seInf)
		ctl.entries, ctl.seIndex = networkinglisters.NewServiceEntryLister(seInf.GetIndexer()), seInf.GetIndexer()
		regs = append(regs, registration{seInf, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.serviceEntryChanged(nil, obj) },
			UpdateFunc: ctl.serviceEntryChanged,
			DeleteFunc: func(obj any) { ctl.serviceEntryChanged(obj, nil) },
		}})
	} else {
		log.Info("ServiceEntries are not served; none will be translated", "group_version", serviceEntryGroupVersion)
	}

	served, err = bootstrap.Served(clients.Kube.Discovery(), gatewayGroupVersion, gatewayResource)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if served && clients.Gateway != nil {
		f := gwinformers.NewSharedInformerFactory(clients.Gateway, 0)
		ctl.factories = append(ctl.factories, f)
		ctl.shutdowns = append(ctl.shutdowns, f.Shutdown)
		gwInf := f.Gateway().V1().Gateways()
		ctl.gateways = gwInf.Lister()
		regs = append(regs, registration{gwInf.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { ctl.gatewayChanged(nil, obj) },
			UpdateFunc: ctl.gatewayChanged,
			DeleteFunc: func(obj any) { ctl.gatewayChanged(obj, nil) },
		}})
	} else {
		log.Info("Gateways are not served; no waypoint Gateway will be found, so services that name one point at its service name",
			"group_version", gatewayGroupVersion)
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

// SetMesh replaces the mesh settings. When they differ from the current
// ones, every object is queued again, since cluster ID, network, trust
// domain and domain suffix appear in every resource. Safe to call from any
// goroutine, before or during Run.
func (c *Controller) SetMesh(m workloads.MeshConfig) {
	if old := c.mesh.Swap(&m); old != nil && *old == m {
		return
	}
	c.log.Info("mesh config changed; recomputing every address", "cluster_id", m.ClusterID, "network", m.Network,
		"trust_domain", m.TrustDomain, "domain_suffix", m.DomainSuffix)
	c.enqueueAll()
}

// Translations is the number of keys translated so far; tests and
// benchmarks use it to check that a change recomputes only what it affects.
func (c *Controller) Translations() int64 { return c.translations.Load() }

// Run watches the cluster and updates the cache until ctx is done. It
// returns an error only if the informers cannot sync.
func (c *Controller) Run(ctx context.Context) error {
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	var running sync.WaitGroup
	for _, inf := range c.informers {
		running.Go(func() { inf.RunWithContext(ctx) })
	}
	defer func() {
		for _, s := range c.shutdowns {
			s()
		}
		running.Wait()
	}()

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

// sync recomputes the resources of k and stores them, removing those it
// no longer produces.
func (c *Controller) sync(k key) error {
	addrs, notes, err := c.translate(k)
	if err != nil {
		return err
	}
	c.translations.Add(1)
	c.report(k, notes)

	updated := make(map[string]*anypb.Any, len(addrs))
	for _, a := range addrs {
		name := workloads.ResourceName(a)
		if name == "" {
			continue
		}
		body, err := ads.MarshalAny(a)
		if err != nil {
			return err
		}
		updated[name] = body
	}
	var removed []string
	for _, name := range c.owned[k] {
		if _, ok := updated[name]; !ok && c.release(name, k) {
			removed = append(removed, name)
		}
	}
	names := make([]string, 0, len(updated))
	for name := range updated {
		names = append(names, name)
		c.claim(name, k)
	}
	if len(updated) > 0 || len(removed) > 0 {
		c.cache.Apply(AddressType, updated, removed)
	}
	if len(names) == 0 {
		delete(c.owned, k)
	} else {
		slices.Sort(names)
		c.owned[k] = names
	}
	return nil
}

// claim records that k produces name.
func (c *Controller) claim(name string, k key) {
	o := c.owners[name]
	if o == nil {
		o = map[key]struct{}{}
		c.owners[name] = o
	}
	if _, ok := o[k]; ok {
		return
	}
	for other := range o {
		c.log.Warn("two objects produce the same address resource; the one translated last wins",
			"resource", name, "kind", k.kind.String(), "namespace", k.namespace, "name", k.name,
			"other_kind", other.kind.String(), "other_namespace", other.namespace, "other_name", other.name)
		break
	}
	o[k] = struct{}{}
}

// release records that k no longer produces name and reports whether name
// should leave the cache. If another object still produces it, that object
// is queued to write its own version back.
func (c *Controller) release(name string, k key) bool {
	o := c.owners[name]
	delete(o, k)
	if len(o) == 0 {
		delete(c.owners, name)
		return true
	}
	for other := range o {
		c.queue.Add(other)
	}
	return false
}

// report logs a key's translation notes when they change, so a lasting
// problem (a waypoint that is not ready, a bad ServiceEntry address) is
// explained once rather than on every recomputation.
func (c *Controller) report(k key, notes []error) {
	var sb strings.Builder
	for _, n := range notes {
		sb.WriteString(n.Error())
		sb.WriteByte('\n')
	}
	s := sb.String()
	prev := c.notes[k]
	if s == prev {
		return
	}
	if s == "" {
		delete(c.notes, k)
		c.log.Info("translation problems cleared", "kind", k.kind.String(), "namespace", k.namespace, "name", k.name)
		return
	}
	c.notes[k] = s
	for _, n := range notes {
		c.log.Warn("translation degraded", "kind", k.kind.String(), "namespace", k.namespace, "name", k.name, "problem", n.Error())
	}
}

// translate returns the Addresses k should have now (none when the object
// is gone or does not translate) and notes explaining a degraded result.
func (c *Controller) translate(k key) ([]*workloadapi.Address, []error, error) {
	ns, err := c.namespaces.Get(k.namespace)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, nil, err
	}
	in := workloads.Inputs{Namespace: ns, Mesh: *c.mesh.Load()}
	if c.gateways != nil {
		in.Gateways = c.gateway
	}
	switch k.kind {
	case kindPod:
		pod, err := c.pods.Pods(k.namespace).Get(k.name)
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		in.Node, _ = c.nodes.Get(pod.Spec.NodeName)
		in.Services = c.candidateServices(pod)
		in.ServiceEntries = c.candidateEntries(pod)
		w := workloads.Workload(pod, in)
		if w == nil {
			c.log.Debug("pod is not a workload", "namespace", k.namespace, "name", k.name,
				"phase", pod.Status.Phase, "pod_ip", pod.Status.PodIP, "host_network", pod.Spec.HostNetwork)
			return nil, nil, nil
		}
		if p := c.policies.Load(); p != nil {
			w.AuthorizationPolicies = (*p).Attached(pod.Namespace, pod.Labels)
		}
		return []*workloadapi.Address{{Type: &workloadapi.Address_Workload{Workload: w}}}, nil, nil
	case kindService:
		svc, err := c.services.Services(k.namespace).Get(k.name)
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		s, notes := workloads.Service(svc, in)
		if s == nil {
			c.log.Debug("service is not translated", "namespace", k.namespace, "name", k.name, "type", svc.Spec.Type)
			return nil, nil, nil
		}
		return []*workloadapi.Address{{Type: &workloadapi.Address_Service{Service: s}}}, notes, nil
	case kindEndpointSlice:
		es, err := c.slices.EndpointSlices(k.namespace).Get(k.name)
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		name := es.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			return nil, nil, nil
		}
		svc, err := c.services.Services(k.namespace).Get(name)
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		addrs, notes := workloads.EndpointSlice(es, svc, in)
		return addrs, notes, nil
	default:
		if c.entries == nil {
			return nil, nil, nil
		}
		se, err := c.entries.ServiceEntries(k.namespace).Get(k.name)
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		addrs, notes := workloads.ServiceEntry(se, in)
		return addrs, notes, nil
	}
}

// newServiceEntryInformer watches ServiceEntries in every namespace. It is
// built here rather than by istio.io/client-go's informer factory so that
// it honours a client's statement that it cannot stream lists (fake
// clientsets), which that factory's generated informers do not pass on.
func newServiceEntryInformer(client istioclient.Interface) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.NetworkingV1().ServiceEntries(metav1.NamespaceAll).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.NetworkingV1().ServiceEntries(metav1.NamespaceAll).Watch(ctx, o)
		},
	}
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, client), &networkingv1.ServiceEntry{}, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// gateway is the workloads.GatewayGetter over the Gateway informer.
func (c *Controller) gateway(namespace, name string) *gatewayv1.Gateway {
	gw, err := c.gateways.Gateways(namespace).Get(name)
	if err != nil {
		return nil
	}
	return gw
}
