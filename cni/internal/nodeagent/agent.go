package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/ambient-mesh/mesh/cni/internal/agentapi"
	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/pkg/zds"
	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// Config is what an Agent needs.
type Config struct {
	// NodeName is the node the agent runs on; it handles only its pods.
	NodeName string
	Client   kubernetes.Interface
	// Mode installs the redirection in a pod's network namespace.
	Mode   redirect.Mode
	Policy Policy
	// DNSCapture sends enrolled pods' DNS to ztunnel.
	DNSCapture bool
	// FindNetns opens the network namespace of a running pod that was not
	// seen through the plugin (enrolled live, or started while the agent
	// was away). ScanProc if nil.
	FindNetns func(ctx context.Context, pod *corev1.Pod) (*os.File, error)
	// Repair says what to do with a running pod that should be enrolled but
	// is not (its namespace was just labelled, or it started while the
	// agent was away): RepairCapture (the default) captures it in place,
	// RepairLabel labels it LabelUninitialized for an operator to act on,
	// RepairDelete deletes it so that its replacement starts captured.
	Repair string
	// Probes, if set, is told the addresses of enrolled pods, so that the
	// node's probes to them come from the address their redirection lets
	// through (hostprobe.SNAT).
	Probes ProbeSource
	Log    *slog.Logger
}

// ProbeSource keeps the set of enrolled pod addresses the node's own
// connections are rewritten for.
type ProbeSource interface {
	Add(netip.Addr) error
	Delete(netip.Addr) error
}

// Repair modes.
const (
	RepairCapture = "capture"
	RepairLabel   = "label"
	RepairDelete  = "delete"
)

// LabelUninitialized marks a running pod that should be in the mesh and is
// not, in RepairLabel mode.
const LabelUninitialized = "cni.istio.io/uninitialized"

// Agent enrolls its node's pods: through the plugin when a sandbox is
// created (PodAdded, which returns only once ztunnel has the pod), and
// through its watch of pods and namespaces for pods already running when a
// label changes or when the agent starts. It serves ztunnel the enrolled
// pods over ZDS.
type Agent struct {
	cfg Config
	log *slog.Logger
	zds *zds.Server

	podFactory, nsFactory informers.SharedInformerFactory
	pods                  corelisters.PodLister
	namespaces            corelisters.NamespaceLister
	synced                []cache.InformerSynced
	queue                 workqueue.TypedRateLimitingInterface[types.NamespacedName]
	ready                 atomic.Bool

	locks keyedMutex // one operation at a time per pod
	// restored is closed once the pods enrolled before the agent started
	// are recorded again; until then no snapshot is sent, so a ztunnel
	// that connects to a restarted agent does not drop its pods.
	restored chan struct{}

	mu       sync.Mutex
	enrolled map[types.UID]*member
}

// member is an enrolled pod. The agent holds its network namespace open
// while it is enrolled, to send it to ztunnel again after a reconnect.
type member struct {
	namespace, name, serviceAccount string
	netns                           *os.File
	ips                             []netip.Addr
	// containerID is the sandbox the plugin enrolled the pod for; empty
	// when it was enrolled while running.
	containerID string
}

var _ agentapi.Agent = (*Agent)(nil)

// New returns an agent. Serve ZDS with ZDS(), the plugin API with
// agentapi.Handler(agent), and call Run.
func New(cfg Config) *Agent {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FindNetns == nil {
		cfg.FindNetns = ScanProc
	}
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Log,
		enrolled: map[types.UID]*member{},
		restored: make(chan struct{}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "nodeagent-pods"}),
	}
	a.zds = &zds.Server{Snapshot: a.snapshot, Logger: cfg.Log.With("subsystem", "zds")}

	a.podFactory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	a.nsFactory = informers.NewSharedInformerFactory(cfg.Client, 0)
	podInf := a.podFactory.Core().V1().Pods()
	nsInf := a.nsFactory.Core().V1().Namespaces()
	a.pods, a.namespaces = podInf.Lister(), nsInf.Lister()
	enqueue := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			a.queue.Add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
	}
	r1, _ := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	nsChanged := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			pods, _ := a.pods.Pods(ns.Name).List(labels.Everything())
			for _, p := range pods {
				enqueue(p)
			}
		}
	}
	r2, _ := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: nsChanged, UpdateFunc: func(_, o any) { nsChanged(o) },
	})
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, nsInf.Informer().HasSynced, r1.HasSynced, r2.HasSynced}
	return a
}

// ZDS is the server ztunnel connects to.
func (a *Agent) ZDS() *zds.Server { return a.zds }

// Run watches the node's pods and their namespaces, and reconciles each
// pod's enrollment with its labels, until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	a.podFactory.Start(ctx.Done())
	a.nsFactory.Start(ctx.Done())
	defer a.podFactory.Shutdown()
	defer a.nsFactory.Shutdown()
	defer a.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return errors.New("nodeagent: informers did not sync")
	}
	// The pods captured before the agent started are recorded before the
	// reconcile loop runs: otherwise it would take them for pods to repair.
	// Events queued meanwhile wait in the queue.
	a.restore(ctx)
	close(a.restored)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for a.processNext(ctx) {
		}
	}()
	a.ready.Store(true)
	a.log.Info("watching the node's pods", "node", a.cfg.NodeName, "mode", a.cfg.Mode.Name(), "enrolled", a.count())
	<-ctx.Done()
	a.queue.ShutDown()
	<-done
	a.releaseAll()
	return nil
}

// Status is ready once the informers have synced. It does not depend on
// ztunnel: the ztunnel pod itself needs the node's network to start.
func (a *Agent) Status(context.Context) error {
	if !a.ready.Load() {
		return errors.New("the node agent has not synced its pods yet")
	}
	return nil
}

// PodAdded handles the plugin's ADD: if the pod is enrolled, its
// redirection is installed and ztunnel has acked it before this returns;
// any failure fails the sandbox, which the kubelet retries.
func (a *Agent) PodAdded(ctx context.Context, req agentapi.PodAdded) (agentapi.AddResult, error) {
	pod, err := a.lookupPod(ctx, req.PodNamespace, req.PodName)
	if err != nil {
		return agentapi.AddResult{}, err
	}
	if req.PodUID != "" && types.UID(req.PodUID) != pod.UID {
		return agentapi.AddResult{}, fmt.Errorf("pod %s/%s has uid %s, the runtime says %s", pod.Namespace, pod.Name, pod.UID, req.PodUID)
	}
	d, err := a.decide(ctx, pod)
	if err != nil {
		return agentapi.AddResult{}, err
	}
	if !d.Enrolled {
		return agentapi.AddResult{Enrolled: false, Reason: d.Reason}, nil
	}
	var ips []netip.Addr
	for _, c := range req.IPs {
		if p, err := netip.ParsePrefix(c.Address); err == nil {
			ips = append(ips, p.Addr())
		}
	}
	netns, err := os.Open(req.Netns)
	if err != nil {
		return agentapi.AddResult{}, fmt.Errorf("open netns of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	unlock := a.locks.lock(string(pod.UID))
	defer unlock()
	if err := a.enroll(ctx, pod, netns, ips, true); err != nil {
		return agentapi.AddResult{}, err
	}
	a.mu.Lock()
	if m := a.enrolled[pod.UID]; m != nil {
		m.containerID = req.ContainerID
	}
	a.mu.Unlock()
	a.log.Info("pod enrolled at sandbox creation", "namespace", pod.Namespace, "pod", pod.Name, "reason", d.Reason)
	return agentapi.AddResult{Enrolled: true, Reason: d.Reason}, nil
}

// PodDeleted handles the plugin's DEL: ztunnel forgets the pod. The
// namespace is going away with its redirection, so nothing is undone in it.
func (a *Agent) PodDeleted(ctx context.Context, req agentapi.PodDeleted) error {
	uid := types.UID(req.PodUID)
	if uid == "" {
		uid = a.uidOf(req.PodNamespace, req.PodName)
	}
	if uid == "" {
		return nil
	}
	unlock := a.locks.lock(string(uid))
	defer unlock()
	a.mu.Lock()
	m := a.enrolled[uid]
	a.mu.Unlock()
	if m != nil && m.containerID != "" && req.ContainerID != "" && m.containerID != req.ContainerID {
		// A repeated DEL for an earlier sandbox of the pod: the current one
		// stays enrolled.
		a.log.Info("DEL for an earlier sandbox ignored", "namespace", m.namespace, "pod", m.name, "container", req.ContainerID, "current", m.containerID)
		return nil
	}
	return a.forget(ctx, uid)
}

// decide applies the policy to pod with its namespace, from the informer
// or, when the informer has not seen it, from the API server. Failing to
// read the namespace is an error, never "not labelled": that would start
// an ambient pod outside the mesh.
func (a *Agent) decide(ctx context.Context, pod *corev1.Pod) (Decision, error) {
	ns, err := a.namespaces.Get(pod.Namespace)
	if err != nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ns, err = a.cfg.Client.CoreV1().Namespaces().Get(ctx, pod.Namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			ns, err = nil, nil
		}
		if err != nil {
			return Decision{}, fmt.Errorf("read namespace %s of pod %s: %w", pod.Namespace, pod.Name, err)
		}
	}
	return a.cfg.Policy.Decide(pod, ns), nil
}

// lookupPod finds a pod the plugin names: in the informer, or, when the
// informer has not seen it yet, from the API server.
func (a *Agent) lookupPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	if p, err := a.pods.Pods(namespace).Get(name); err == nil {
		return p, nil
	}
	p, err := a.cfg.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("look up pod %s/%s: %w", namespace, name, err)
	}
	return p, nil
}

// enroll installs the redirection, records the pod and hands it to
// ztunnel. It takes netns. With requireAck (a sandbox being created) any
// failure, ztunnel being away included, fails the enrollment: the
// redirection stays, the pod is not recorded and its sandbox is retried.
// Without it (a running pod), a ztunnel that is not connected gets the pod
// in the snapshot it is sent when it connects.
func (a *Agent) enroll(ctx context.Context, pod *corev1.Pod, netns *os.File, ips []netip.Addr, requireAck bool) error {
	if len(ips) == 0 {
		ips = podIPs(pod)
	}
	path := fdPath(netns)
	if err := a.cfg.Mode.Apply(path, redirect.Config{PodIPs: ips, DNSCapture: a.cfg.DNSCapture}); err != nil {
		netns.Close()
		return fmt.Errorf("redirect pod %s/%s (%s mode): %w", pod.Namespace, pod.Name, a.cfg.Mode.Name(), err)
	}
	m := &member{namespace: pod.Namespace, name: pod.Name, serviceAccount: pod.Spec.ServiceAccountName, netns: netns, ips: ips}
	// Recorded before the push, so a snapshot sent meanwhile has it.
	a.mu.Lock()
	old := a.enrolled[pod.UID]
	a.enrolled[pod.UID] = m
	a.mu.Unlock()
	if old != nil && old.netns != netns {
		old.netns.Close()
	}
	err := a.zds.AddWorkload(ctx, zds.Workload{UID: string(pod.UID), Info: m.info(), Netns: netns})
	if err != nil && !requireAck && errors.Is(err, zds.ErrNotConnected) {
		a.log.Info("ztunnel is not connected; it gets the pod when it connects", "namespace", pod.Namespace, "pod", pod.Name)
		err = nil
	}
	if err != nil {
		a.mu.Lock()
		if a.enrolled[pod.UID] == m {
			delete(a.enrolled, pod.UID)
		}
		a.mu.Unlock()
		netns.Close()
		if errors.Is(err, zds.ErrNotConnected) {
			return fmt.Errorf("pod %s/%s: ztunnel is not connected to the node agent; not starting the pod uncaptured", pod.Namespace, pod.Name)
		}
		return fmt.Errorf("pod %s/%s: ztunnel did not take it: %w", pod.Namespace, pod.Name, err)
	}
	a.probes(ips, true)
	a.annotate(ctx, pod.Namespace, pod.Name, true)
	return nil
}

// probes adds or deletes a pod's addresses in the probe source set; a
// failure is logged, since probes then fail visibly rather than open.
func (a *Agent) probes(ips []netip.Addr, add bool) {
	if a.cfg.Probes == nil {
		return
	}
	for _, ip := range ips {
		op, verb := a.cfg.Probes.Delete, "delete"
		if add {
			op, verb = a.cfg.Probes.Add, "add"
		}
		if err := op(ip); err != nil {
			a.log.Warn("probe source set", "op", verb, "ip", ip.String(), "error", err)
		}
	}
}

// release takes a running pod out of the mesh: ztunnel drops it, the
// redirection is removed and the annotation too.
func (a *Agent) release(ctx context.Context, uid types.UID, reason string) error {
	a.mu.Lock()
	m := a.enrolled[uid]
	a.mu.Unlock()
	if m == nil {
		return nil
	}
	// Redirection first: if ztunnel then fails to release the pod, it
	// still serves it, rather than the pod being redirected to nobody.
	if err := a.cfg.Mode.Remove(fdPath(m.netns)); err != nil {
		return fmt.Errorf("pod %s/%s: remove redirection: %w", m.namespace, m.name, err)
	}
	if err := a.zds.DelWorkload(ctx, string(uid)); err != nil && !errors.Is(err, zds.ErrNotConnected) {
		return fmt.Errorf("pod %s/%s: ztunnel did not release it: %w", m.namespace, m.name, err)
	}
	a.mu.Lock()
	delete(a.enrolled, uid)
	a.mu.Unlock()
	m.netns.Close()
	a.probes(m.ips, false)
	a.annotate(ctx, m.namespace, m.name, false)
	a.log.Info("pod released", "namespace", m.namespace, "pod", m.name, "reason", reason)
	return nil
}

// forget drops a deleted pod: ztunnel is told, nothing is undone.
// The pod stays recorded until ztunnel has been told (or is not
// connected, so its next snapshot leaves the pod out), so that a failed
// attempt is retried: by the reconcile loop, which sees the pod gone.
func (a *Agent) forget(ctx context.Context, uid types.UID) error {
	a.mu.Lock()
	m := a.enrolled[uid]
	a.mu.Unlock()
	if m == nil {
		return nil
	}
	// Not bound to the plugin's short DEL deadline: ztunnel may be busy
	// with a snapshot.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*zds.DefaultAckTimeout)
	defer cancel()
	if err := a.zds.DelWorkload(ctx, string(uid)); err != nil && !errors.Is(err, zds.ErrNotConnected) {
		a.queue.AddRateLimited(types.NamespacedName{Namespace: m.namespace, Name: m.name})
		return fmt.Errorf("pod %s/%s: tell ztunnel it is gone: %w", m.namespace, m.name, err)
	}
	a.mu.Lock()
	if a.enrolled[uid] == m {
		delete(a.enrolled, uid)
	}
	a.mu.Unlock()
	m.netns.Close()
	a.probes(m.ips, false)
	a.log.Info("pod deleted", "namespace", m.namespace, "pod", m.name)
	return nil
}

func (a *Agent) releaseAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	// The agent is stopping, not uninstalling: redirections stay, so the
	// pods keep flowing through ztunnel; only the handles are closed.
	for uid, m := range a.enrolled {
		m.netns.Close()
		delete(a.enrolled, uid)
	}
}

func (a *Agent) uidOf(namespace, name string) types.UID {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, m := range a.enrolled {
		if m.namespace == namespace && m.name == name {
			return uid
		}
	}
	return ""
}

func (a *Agent) isEnrolled(uid types.UID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enrolled[uid] != nil
}

// restore records again the running pods that should be enrolled, before
// the first snapshot: after an agent restart they are the pods ztunnel
// already serves. Their redirection is applied again (idempotent, and
// established connections survive it). A pod whose namespace cannot be
// found is left to the reconcile loop, which retries.
func (a *Agent) restore(ctx context.Context) {
	pods, _ := a.pods.List(labels.Everything())
	for _, pod := range pods {
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil || podFinished(pod) {
			continue
		}
		if d, err := a.decide(ctx, pod); err != nil || !d.Enrolled {
			if err != nil {
				a.log.Warn("enrollment unknown at start; left to the reconcile loop", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
			}
			continue
		}
		if a.cfg.Repair != "" && a.cfg.Repair != RepairCapture && pod.Annotations[AnnotationRedirect] != RedirectionEnabled {
			continue // never captured: the reconcile loop repairs it
		}
		unlock := a.locks.lock(string(pod.UID))
		if a.isEnrolled(pod.UID) { // the plugin's ADD got there first
			unlock()
			continue
		}
		a.restoreOne(ctx, pod)
		unlock()
	}
}

func (a *Agent) restoreOne(ctx context.Context, pod *corev1.Pod) {
	netns, err := a.cfg.FindNetns(ctx, pod)
	if err != nil {
		a.log.Warn("enrolled pod not found on the node at start", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
		return
	}
	ips := podIPs(pod)
	if err := a.cfg.Mode.Apply(fdPath(netns), redirect.Config{PodIPs: ips, DNSCapture: a.cfg.DNSCapture}); err != nil {
		netns.Close()
		a.log.Warn("could not redirect an enrolled pod at start", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
		return
	}
	a.mu.Lock()
	a.enrolled[pod.UID] = &member{namespace: pod.Namespace, name: pod.Name, serviceAccount: pod.Spec.ServiceAccountName, netns: netns, ips: ips}
	a.mu.Unlock()
	a.probes(ips, true)
}

func podIPs(pod *corev1.Pod) []netip.Addr {
	var ips []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if addr, err := netip.ParseAddr(ip.IP); err == nil {
			ips = append(ips, addr)
		}
	}
	return ips
}

func (a *Agent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.enrolled)
}

// snapshot is what a (re)connecting ztunnel is sent, once the agent knows
// the enrolled pods.
func (a *Agent) snapshot(ctx context.Context) ([]zds.Workload, error) {
	select {
	case <-a.restored:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]zds.Workload, 0, len(a.enrolled))
	for uid, m := range a.enrolled {
		out = append(out, zds.Workload{UID: string(uid), Info: m.info(), Netns: m.netns})
	}
	return out, nil
}

func (m *member) info() *zdsapi.WorkloadInfo {
	return &zdsapi.WorkloadInfo{Name: m.name, Namespace: m.namespace, ServiceAccount: m.serviceAccount}
}

func (a *Agent) processNext(ctx context.Context) bool {
	k, shutdown := a.queue.Get()
	if shutdown {
		return false
	}
	defer a.queue.Done(k)
	if err := a.reconcile(ctx, k); err != nil {
		a.log.Warn("pod enrollment not reconciled; retrying", "namespace", k.Namespace, "pod", k.Name, "error", err)
		if ctx.Err() == nil {
			a.queue.AddRateLimited(k)
		}
		return true
	}
	a.queue.Forget(k)
	return true
}

// reconcile brings one running pod's enrollment in line with its labels:
// a pod that should be enrolled and is not (labelled live, or started
// while the agent was away) is captured in place; an enrolled pod that
// should not be any more is released; a deleted pod is forgotten.
func (a *Agent) reconcile(ctx context.Context, k types.NamespacedName) error {
	pod, err := a.pods.Pods(k.Namespace).Get(k.Name)
	if apierrors.IsNotFound(err) {
		if uid := a.uidOf(k.Namespace, k.Name); uid != "" {
			unlock := a.locks.lock(string(uid))
			defer unlock()
			return a.forget(ctx, uid)
		}
		return nil
	}
	if err != nil {
		return err
	}
	unlock := a.locks.lock(string(pod.UID))
	defer unlock()
	d, err := a.decide(ctx, pod)
	if err != nil {
		return err
	}
	enrolled := a.isEnrolled(pod.UID)
	switch {
	case d.Enrolled && !enrolled:
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil || podFinished(pod) {
			return nil // the plugin's ADD enrolls it, or it is on its way out
		}
		switch a.cfg.Repair {
		case RepairLabel:
			return a.repairLabel(ctx, pod)
		case RepairDelete:
			a.log.Info("deleting a running pod that should be in the mesh, so it restarts captured", "namespace", pod.Namespace, "pod", pod.Name, "reason", d.Reason)
			err := a.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return fmt.Errorf("delete pod %s/%s for repair: %w", pod.Namespace, pod.Name, err)
			}
			return nil
		}
		netns, err := a.cfg.FindNetns(ctx, pod)
		if err != nil {
			return fmt.Errorf("find the network namespace of pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if err := a.enroll(ctx, pod, netns, nil, false); err != nil {
			return err
		}
		a.log.Info("running pod enrolled", "namespace", pod.Namespace, "pod", pod.Name, "reason", d.Reason)
	case !d.Enrolled && enrolled:
		return a.release(ctx, pod.UID, d.Reason)
	case d.Enrolled && pod.Annotations[AnnotationRedirect] != RedirectionEnabled:
		a.annotate(ctx, pod.Namespace, pod.Name, true)
	}
	return nil
}

// repairLabel marks a pod that should be captured and is not.
func (a *Agent) repairLabel(ctx context.Context, pod *corev1.Pod) error {
	if pod.Labels[LabelUninitialized] == "true" {
		return nil
	}
	a.log.Warn("running pod should be in the mesh and is not; labelled for a restart", "namespace", pod.Namespace, "pod", pod.Name, "label", LabelUninitialized)
	patch := []byte(`{"metadata":{"labels":{"` + LabelUninitialized + `":"true"}}}`)
	if _, err := a.cfg.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("label pod %s/%s for repair: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

func podFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// annotate sets or removes ambient.istio.io/redirection on the pod. A
// failure is logged: the annotation informs users, it does not capture.
func (a *Agent) annotate(ctx context.Context, namespace, name string, enabled bool) {
	value := `"` + RedirectionEnabled + `"`
	if !enabled {
		value = "null"
	}
	patch := []byte(`{"metadata":{"annotations":{"` + AnnotationRedirect + `":` + value + `}}}`)
	if _, err := a.cfg.Client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
		a.log.Warn("could not annotate pod", "namespace", namespace, "pod", name, "annotation", AnnotationRedirect, "error", err)
	}
}

// fdPath names an open file by descriptor, so that the redirection modes
// can open the very namespace the agent holds.
func fdPath(f *os.File) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()) }

// keyedMutex serializes operations per key.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
