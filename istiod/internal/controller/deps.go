package controller

import (
	"maps"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/ambient-mesh/mesh/istiod/internal/workloads"
)

// Index names. Label index keys are "namespace/key=value", so a lookup
// stays within one namespace, as selectors do.
const (
	// indexLabels indexes pods by each of their labels.
	indexLabels = "labels"
	// indexSelector indexes Services and ServiceEntries by each pair of
	// their pod selector.
	indexSelector = "selector"
	// indexCrossNamespace indexes pods, Services and ServiceEntries whose
	// own labels name a waypoint in another namespace, by their namespace:
	// a Gateway may admit them by their namespace's labels.
	indexCrossNamespace = "cross-namespace-waypoint"
	// indexService indexes EndpointSlices by "namespace/service".
	indexService = "service"
	// indexWaypoint indexes pods, Services, ServiceEntries and namespaces
	// by the waypoint Gateway ("namespace/name") their own labels name.
	indexWaypoint = "waypoint"
	// indexNode indexes pods by the node they run on.
	indexNode = "node"
)

func podNodeIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

// nodeChanged queues the pods of a node whose locality labels changed.
func (c *Controller) nodeChanged(old, obj any) {
	o, _ := untomb(old).(*corev1.Node)
	n, _ := untomb(obj).(*corev1.Node)
	if n == nil {
		return // a deleted node's pods go with it
	}
	if o != nil {
		same := true
		for _, l := range []string{workloads.LabelRegion, workloads.LabelZone, workloads.LabelSubzone} {
			same = same && o.Labels[l] == n.Labels[l]
		}
		if same {
			return
		}
	}
	pods, _ := c.podIndex.ByIndex(indexNode, n.Name)
	for _, p := range pods {
		c.enqueue(kindPod, p)
	}
}

func labelKey(namespace, k, v string) string { return namespace + "/" + k + "=" + v }

func pairKeys(namespace string, m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, labelKey(namespace, k, v))
	}
	return out
}

func podLabelIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	return pairKeys(p.Namespace, p.Labels), nil
}

func serviceSelectorIndex(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok || s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	return pairKeys(s.Namespace, s.Spec.Selector), nil
}

func serviceEntrySelectorIndex(obj any) ([]string, error) {
	se, ok := obj.(*networkingv1.ServiceEntry)
	if !ok {
		return nil, nil
	}
	return pairKeys(se.Namespace, se.Spec.GetWorkloadSelector().GetLabels()), nil
}

func sliceServiceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || es.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]}, nil
}

// ownWaypoint is the namespace of a pod, Service or ServiceEntry and the
// waypoint its own labels name.
func ownWaypoint(obj any) (string, workloads.WaypointRef, bool) {
	var l map[string]string
	var ns string
	switch o := obj.(type) {
	case *corev1.Pod:
		l, ns = o.Labels, o.Namespace
	case *corev1.Service:
		l, ns = o.Labels, o.Namespace
	case *networkingv1.ServiceEntry:
		l, ns = o.Labels, o.Namespace
	default:
		return "", workloads.WaypointRef{}, false
	}
	ref, ok := workloads.LabelledWaypoint(l, ns)
	return ns, ref, ok
}

func objectWaypointIndex(obj any) ([]string, error) {
	if _, ref, ok := ownWaypoint(obj); ok {
		return []string{ref.String()}, nil
	}
	return nil, nil
}

func crossNamespaceIndex(obj any) ([]string, error) {
	if ns, ref, ok := ownWaypoint(obj); ok && ref.Namespace != ns {
		return []string{ns}, nil
	}
	return nil, nil
}

func namespaceWaypointIndex(obj any) ([]string, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return nil, nil
	}
	if ref, ok := workloads.LabelledWaypoint(n.Labels, n.Name); ok {
		return []string{ref.String()}, nil
	}
	return nil, nil
}

// untomb unwraps a delete tombstone.
func untomb(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

// enqueue queues the object obj (possibly a tombstone) as kind k.
func (c *Controller) enqueue(k kind, obj any) {
	switch o := untomb(obj).(type) {
	case *corev1.Pod:
		c.queue.Add(key{kind: k, namespace: o.Namespace, name: o.Name})
	case *corev1.Service:
		c.queue.Add(key{kind: k, namespace: o.Namespace, name: o.Name})
	case *networkingv1.ServiceEntry:
		c.queue.Add(key{kind: k, namespace: o.Namespace, name: o.Name})
	case *discoveryv1.EndpointSlice:
		c.queue.Add(key{kind: k, namespace: o.Namespace, name: o.Name})
	}
}

// enqueueSlices queues the EndpointSlices of Service namespace/name.
func (c *Controller) enqueueSlices(namespace, name string) {
	objs, _ := c.sliceIndex.ByIndex(indexService, namespace+"/"+name)
	for _, o := range objs {
		c.enqueue(kindEndpointSlice, o)
	}
}

// selectedPods returns the pods of namespace that selector picks, reading
// only the index bucket of the selector's rarest pair. An empty selector
// picks none, as for Services and ServiceEntries.
func (c *Controller) selectedPods(namespace string, selector map[string]string) []*corev1.Pod {
	if len(selector) == 0 {
		return nil
	}
	var smallest []any
	first := true
	for k, v := range selector {
		objs, err := c.podIndex.ByIndex(indexLabels, labelKey(namespace, k, v))
		if err != nil {
			return nil
		}
		if first || len(objs) < len(smallest) {
			smallest, first = objs, false
		}
		if len(smallest) == 0 {
			return nil
		}
	}
	sel := labels.SelectorFromSet(selector)
	var out []*corev1.Pod
	for _, o := range smallest {
		if p, ok := o.(*corev1.Pod); ok && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

func (c *Controller) enqueuePods(pods []*corev1.Pod) {
	for _, p := range pods {
		c.queue.Add(key{kind: kindPod, namespace: p.Namespace, name: p.Name})
	}
}

// candidates returns the objects of indexer whose selector has a pair
// among the pod's labels: a superset of those that select it.
func candidates[T any](indexer cache.Indexer, pod *corev1.Pod) []T {
	if indexer == nil {
		return nil
	}
	seen := map[any]bool{}
	var out []T
	for k, v := range pod.Labels {
		objs, _ := indexer.ByIndex(indexSelector, labelKey(pod.Namespace, k, v))
		for _, o := range objs {
			if t, ok := o.(T); ok && !seen[o] {
				seen[o] = true
				out = append(out, t)
			}
		}
	}
	return out
}

func (c *Controller) candidateServices(pod *corev1.Pod) []*corev1.Service {
	return candidates[*corev1.Service](c.svcIndex, pod)
}

func (c *Controller) candidateEntries(pod *corev1.Pod) []*networkingv1.ServiceEntry {
	return candidates[*networkingv1.ServiceEntry](c.seIndex, pod)
}

// serviceChanged queues the Service and, when what pods read from it
// changed, the pods its old or new selector picks. old is nil on add, obj
// nil on delete.
func (c *Controller) serviceChanged(old, obj any) {
	o, _ := untomb(old).(*corev1.Service)
	n, _ := untomb(obj).(*corev1.Service)
	if n != nil {
		c.enqueue(kindService, n)
	} else if o != nil {
		c.enqueue(kindService, o)
	}
	if o != nil && n != nil && maps.Equal(o.Spec.Selector, n.Spec.Selector) && o.Spec.Type == n.Spec.Type &&
		equality.Semantic.DeepEqual(o.Spec.Ports, n.Spec.Ports) {
		return
	}
	if o != nil {
		c.enqueuePods(c.selectedPods(o.Namespace, o.Spec.Selector))
		c.enqueueSlices(o.Namespace, o.Name)
	}
	if n != nil {
		c.enqueuePods(c.selectedPods(n.Namespace, n.Spec.Selector))
		if o == nil {
			c.enqueueSlices(n.Namespace, n.Name)
		}
	}
}

// serviceEntryChanged queues the ServiceEntry and, when its spec changed,
// the pods its old or new workloadSelector picks.
func (c *Controller) serviceEntryChanged(old, obj any) {
	o, _ := untomb(old).(*networkingv1.ServiceEntry)
	n, _ := untomb(obj).(*networkingv1.ServiceEntry)
	if n != nil {
		c.enqueue(kindServiceEntry, n)
	} else if o != nil {
		c.enqueue(kindServiceEntry, o)
	}
	if o != nil && n != nil && proto.Equal(&o.Spec, &n.Spec) {
		return
	}
	if o != nil {
		c.enqueuePods(c.selectedPods(o.Namespace, o.Spec.GetWorkloadSelector().GetLabels()))
	}
	if n != nil {
		c.enqueuePods(c.selectedPods(n.Namespace, n.Spec.GetWorkloadSelector().GetLabels()))
	}
}

// namespaceChanged queues what reads the namespace's labels. On add and
// delete that is everything in it; on update, pods when
// istio.io/dataplane-mode changed, and pods, Services and ServiceEntries
// when the waypoint labels changed (objects naming their own waypoint
// ignore the namespace's, but ServiceEntry endpoints always follow it).
func (c *Controller) namespaceChanged(old, obj any) {
	o, _ := untomb(old).(*corev1.Namespace)
	n, _ := untomb(obj).(*corev1.Namespace)
	if o == nil || n == nil {
		ns := n
		if ns == nil {
			ns = o
		}
		if ns != nil {
			c.enqueueNamespace(ns.Name, true, true)
		}
		return
	}
	changed := func(l string) bool { return o.Labels[l] != n.Labels[l] }
	dataplane := changed(workloads.LabelDataplaneMode)
	waypoint := changed(workloads.LabelUseWaypoint) || changed(workloads.LabelUseWaypointNamespace)
	if dataplane || waypoint {
		c.enqueueNamespace(n.Name, dataplane, waypoint)
	}
	if !waypoint && !maps.Equal(o.Labels, n.Labels) {
		c.enqueueCrossNamespaceUsers(n)
	}
}

// enqueueCrossNamespaceUsers queues the objects of ns whose waypoint is in
// another namespace: that Gateway may admit them by ns's labels
// (allowedRoutes with a namespace selector), so any label can matter.
func (c *Controller) enqueueCrossNamespaceUsers(ns *corev1.Namespace) {
	for _, ix := range []struct {
		indexer cache.Indexer
		k       kind
	}{{c.podIndex, kindPod}, {c.svcIndex, kindService}, {c.seIndex, kindServiceEntry}} {
		if ix.indexer == nil {
			continue
		}
		objs, _ := ix.indexer.ByIndex(indexCrossNamespace, ns.Name)
		for _, o := range objs {
			c.enqueue(ix.k, o)
		}
	}
	if ref, ok := workloads.LabelledWaypoint(ns.Labels, ns.Name); ok && ref.Namespace != ns.Name {
		c.enqueueNamespace(ns.Name, false, true)
	}
}

// enqueueNamespace queues the pods of ns, and with waypoint its Services
// and ServiceEntries too. Unless allPods, pods and Services that name their
// own waypoint are skipped: only the namespace's waypoint changed, and they
// do not read it.
func (c *Controller) enqueueNamespace(ns string, allPods, waypoint bool) {
	inherits := func(l map[string]string) bool { return allPods || l[workloads.LabelUseWaypoint] == "" }
	pods, _ := c.pods.Pods(ns).List(labels.Everything())
	for _, p := range pods {
		if inherits(p.Labels) {
			c.queue.Add(key{kind: kindPod, namespace: p.Namespace, name: p.Name})
		}
	}
	if !waypoint {
		return
	}
	svcs, _ := c.services.Services(ns).List(labels.Everything())
	for _, s := range svcs {
		if inherits(s.Labels) {
			c.queue.Add(key{kind: kindService, namespace: s.Namespace, name: s.Name})
		}
	}
	if c.entries != nil {
		ses, _ := c.entries.ServiceEntries(ns).List(labels.Everything())
		for _, se := range ses {
			c.queue.Add(key{kind: kindServiceEntry, namespace: se.Namespace, name: se.Name})
		}
	}
}

// gatewayChanged queues the objects that use the Gateway as their
// waypoint, when a field the waypoint is made from changed.
func (c *Controller) gatewayChanged(old, obj any) {
	o, _ := untomb(old).(*gatewayv1.Gateway)
	n, _ := untomb(obj).(*gatewayv1.Gateway)
	if o != nil && n != nil && o.Spec.GatewayClassName == n.Spec.GatewayClassName &&
		o.Labels[workloads.LabelWaypointFor] == n.Labels[workloads.LabelWaypointFor] &&
		equality.Semantic.DeepEqual(o.Spec.Listeners, n.Spec.Listeners) &&
		equality.Semantic.DeepEqual(o.Spec.Addresses, n.Spec.Addresses) &&
		equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) {
		return
	}
	gw := n
	if gw == nil {
		gw = o
	}
	if gw == nil {
		return
	}
	c.enqueueWaypointUsers(workloads.WaypointRef{Namespace: gw.Namespace, Name: gw.Name})
}

// enqueueWaypointUsers queues the objects whose waypoint resolves to ref:
// those whose own labels name it, and, in namespaces whose labels name it,
// those that inherit the namespace's waypoint.
func (c *Controller) enqueueWaypointUsers(ref workloads.WaypointRef) {
	r := ref.String()
	add := func(indexer cache.Indexer, k kind) {
		if indexer == nil {
			return
		}
		objs, _ := indexer.ByIndex(indexWaypoint, r)
		for _, o := range objs {
			c.enqueue(k, o)
		}
	}
	add(c.podIndex, kindPod)
	add(c.svcIndex, kindService)
	add(c.seIndex, kindServiceEntry)
	nss, _ := c.nsIndex.ByIndex(indexWaypoint, r)
	for _, o := range nss {
		if ns, ok := o.(*corev1.Namespace); ok {
			c.enqueueNamespace(ns.Name, false, true)
		}
	}
}

// enqueueAll queues every pod, Service, ServiceEntry and EndpointSlice.
func (c *Controller) enqueueAll() {
	slices, _ := c.slices.List(labels.Everything())
	for _, es := range slices {
		c.enqueue(kindEndpointSlice, es)
	}
	pods, _ := c.pods.List(labels.Everything())
	c.enqueuePods(pods)
	svcs, _ := c.services.List(labels.Everything())
	for _, s := range svcs {
		c.queue.Add(key{kind: kindService, namespace: s.Namespace, name: s.Name})
	}
	if c.entries != nil {
		ses, _ := c.entries.List(labels.Everything())
		for _, se := range ses {
			c.queue.Add(key{kind: kindServiceEntry, namespace: se.Namespace, name: se.Name})
		}
	}
}
