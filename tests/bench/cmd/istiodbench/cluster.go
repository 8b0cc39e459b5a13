package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/flowcontrol"
)

// What istiod is started with; the bench derives resource names from them.
const (
	clusterID    = "Kubernetes"
	domainSuffix = "cluster.local"
)

const (
	// runLabel marks everything a run creates with the run's id.
	runLabel = "istiodbench/run"
	// fakeNodeTaint keeps the scheduler from placing anyone else's pods
	// on nodes that have no kubelet.
	fakeNodeTaint = "istiodbench/fake-node"
	// revisionLabel is a label istiod copies into the workload (its
	// canonical revision), so changing it changes one resource.
	revisionLabel = "service.istio.io/canonical-revision"
	// image is never pulled: no kubelet runs the pods.
	image = "localhost/istiodbench/none:0"
)

// podUID is the workload resource name istiod gives a pod.
func podUID(ns, name string) string { return clusterID + "//Pod/" + ns + "/" + name }

// serviceName is the resource name istiod gives a Service.
func serviceName(ns, name string) string {
	return ns + "/" + name + "." + ns + ".svc." + domainSuffix
}

func podName(i int) string             { return fmt.Sprintf("pod-%05d", i) }
func svcName(i int) string             { return fmt.Sprintf("svc-%04d", i) }
func appLabel(svc int) string          { return fmt.Sprintf("app-%04d", svc) }
func nodeName(id string, i int) string { return fmt.Sprintf("bench-istiod-%s-node-%d", id, i) }

// podIPs hands out pod addresses from 100.64.0.0/10 (shared address
// space, used by nothing in the cluster), starting at one of 48 /16s
// picked per run, so that two runs at once rarely share addresses.
type podIPs struct{ base uint32 }

func newPodIPs(seed uint32) podIPs {
	return podIPs{base: 100<<24 | (64+seed%48)<<16}
}

// ip returns the address of pod i; over a million pods fit before it
// leaves the /10.
func (p podIPs) ip(i int) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], p.base+1+uint32(i))
	return netip.AddrFrom4(b).String()
}

// objects creates and deletes what one run puts in the cluster.
type objects struct {
	client    kubernetes.Interface
	id        string
	namespace string // the pods and Services
	system    string // istiod's own (its CA secret)
	nodes     []string
	ips       podIPs
	services  int
	limiter   flowcontrol.RateLimiter
	workers   int

	log *slog.Logger

	stopHeartbeat context.CancelFunc // nil until the nodes exist
	heartbeatDone chan struct{}

	mu      sync.Mutex
	created []string // namespaces and nodes, for cleanup
}

func (o *objects) labels() map[string]string { return map[string]string{runLabel: o.id} }

// setup creates the namespaces and the fake nodes, and waits for the
// namespace's default service account, without which pods are refused.
func (o *objects) setup(ctx context.Context) error {
	for _, ns := range []string{o.system, o.namespace} {
		_, err := o.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: o.labels()},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
		o.track("namespace/" + ns)
	}
	for _, n := range o.nodes {
		if err := o.createNode(ctx, n); err != nil {
			return err
		}
	}
	hctx, cancel := context.WithCancel(context.Background())
	o.stopHeartbeat = cancel
	o.heartbeatDone = make(chan struct{})
	go o.heartbeat(hctx)
	return waitFor(ctx, 60*time.Second, "the default service account of "+o.namespace, func() (bool, error) {
		_, err := o.client.CoreV1().ServiceAccounts(o.namespace).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// createNode creates a Node with no kubelet behind it and reports it
// ready, as a kubelet would. Left alone, the node lifecycle controller
// would find it unreachable after about a minute and mark every pod bound
// to it afterwards not ready, changing workloads in the middle of the
// measurement.
func (o *objects) createNode(ctx context.Context, name string) error {
	nodes := o.client.CoreV1().Nodes()
	node, err := nodes.Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: o.labels()},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: fakeNodeTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	o.track("node/" + name)
	now := metav1.Now()
	// A patch, not an update: the controllers are already writing to the
	// new node (its pod CIDR, taints).
	status, err := json.Marshal(map[string]any{"status": corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "fake node of istiodbench", LastHeartbeatTime: now, LastTransitionTime: now,
	}}}})
	if err != nil {
		return err
	}
	if _, err := nodes.Patch(ctx, name, types.StrategicMergePatchType, status, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("write status of node %s: %w", name, err)
	}
	// The lease is the heartbeat the controller watches; owned by the
	// node, it goes when the node does.
	_, err = o.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: o.labels(),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: node.UID}},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: &name, LeaseDurationSeconds: new(int32(40)), RenewTime: &metav1.MicroTime{Time: now.Time},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create lease of node %s: %w", name, err)
	}
	return nil
}

// heartbeat renews the fake nodes' leases every 10 s, well inside the
// controller's grace period (40 s or more), until ctx ends.
func (o *objects) heartbeat(ctx context.Context) {
	defer close(o.heartbeatDone)
	leases := o.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		patch := fmt.Sprintf(`{"spec":{"renewTime":%q}}`, metav1.NowMicro().Format(metav1.RFC3339Micro))
		for _, n := range o.nodes {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := leases.Patch(rctx, n, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			cancel()
			if err != nil && ctx.Err() == nil && o.log != nil {
				o.log.Warn("renewing a fake node's lease failed; the node may turn unready", "node", n, "error", err)
			}
		}
	}
}

func (o *objects) track(what string) {
	o.mu.Lock()
	o.created = append(o.created, what)
	o.mu.Unlock()
}

func (o *objects) service(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svcName(i), Labels: o.labels()},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": appLabel(i)},
			Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// pod i belongs to Service i mod services, and sits on a fake node.
func (o *objects) pod(i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(i), Labels: map[string]string{
			runLabel: o.id, "app": appLabel(i % max(o.services, 1)),
		}},
		Spec: corev1.PodSpec{
			NodeName:                     o.nodes[i%len(o.nodes)],
			AutomountServiceAccountToken: new(false),
			// A safety net: should the heartbeat stall, the node turns
			// unreachable, and pods tolerating that without a time limit
			// are still not evicted.
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: fakeNodeTaint, Operator: corev1.TolerationOpExists},
			},
			Containers: []corev1.Container{{
				Name: "app", Image: image,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
}

// runningStatus is what a kubelet would write once the pod's sandbox has
// its IP and its container is ready: the moment the pod becomes a workload.
func runningStatus(ip string, now time.Time) corev1.PodStatus {
	t := metav1.NewTime(now)
	return corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &t,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: t},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: t},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: t},
		},
	}
}

// write is when one API write was sent and when it was answered.
type write struct{ sent, done time.Time }

// createServices creates Services 0..n-1.
func (o *objects) createServices(ctx context.Context, n int) ([]write, error) {
	ws := make([]write, n)
	err := parallel(ctx, n, o.workers, func(ctx context.Context, i int) error {
		if err := o.limiter.Wait(ctx); err != nil {
			return err
		}
		ws[i].sent = time.Now()
		_, err := o.client.CoreV1().Services(o.namespace).Create(ctx, o.service(i), metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create service %s: %w", svcName(i), err)
		}
		ws[i].done = time.Now()
		return nil
	})
	return ws, err
}

// podTimes are the moments of one pod's life in the run.
type podTimes struct {
	created    time.Time // create sent
	statusSent time.Time // status with its IP sent
	statusDone time.Time // the API server answered the status write
}

// createPods creates pods 0..n-1 and writes each one's running status as
// soon as it exists, as a kubelet would (without the sandbox start).
func (o *objects) createPods(ctx context.Context, n int, progress func(done int)) ([]podTimes, error) {
	times := make([]podTimes, n)
	var done atomic.Int64
	err := parallel(ctx, n, o.workers, func(ctx context.Context, i int) error {
		pods := o.client.CoreV1().Pods(o.namespace)
		if err := o.limiter.Wait(ctx); err != nil {
			return err
		}
		times[i].created = time.Now()
		p, err := pods.Create(ctx, o.pod(i), metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s: %w", podName(i), err)
		}
		if err := o.limiter.Wait(ctx); err != nil {
			return err
		}
		times[i].statusSent = time.Now()
		p.Status = runningStatus(o.ips.ip(i), times[i].statusSent)
		if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("write status of pod %s: %w", podName(i), err)
		}
		times[i].statusDone = time.Now()
		if d := done.Add(1); progress != nil && d%1000 == 0 {
			progress(int(d))
		}
		return nil
	})
	return times, err
}

// cleanup deletes everything the run created. Pods are deleted at once
// (grace period 0) and one by one: with no kubelet to confirm, a graceful
// deletion would never finish, and neither would the namespace's; and one
// DeleteCollection of thousands of pods outlasts etcd's request timeout.
func (o *objects) cleanup(ctx context.Context, pods int) error {
	var errs []error
	core := o.client.CoreV1()
	if o.stopHeartbeat != nil {
		o.stopHeartbeat()
		<-o.heartbeatDone
	}
	o.mu.Lock()
	created := o.created
	o.mu.Unlock()
	if slices.Contains(created, "namespace/"+o.namespace) {
		// A pod that cannot be deleted now is not a reason to stop: once
		// its node is gone the pod garbage collector deletes it too.
		var mu sync.Mutex
		var failed int
		var firstErr error
		zero := int64(0)
		_ = parallel(ctx, pods, o.workers, func(ctx context.Context, i int) error {
			var err error
			for range 3 {
				err = core.Pods(o.namespace).Delete(ctx, podName(i), metav1.DeleteOptions{GracePeriodSeconds: &zero})
				if err == nil || apierrors.IsNotFound(err) || ctx.Err() != nil {
					return nil
				}
			}
			mu.Lock()
			if failed++; firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			return nil
		})
		if failed > 0 {
			errs = append(errs, fmt.Errorf("%d pods not deleted, the first because: %w", failed, firstErr))
		}
	}
	for i := len(created) - 1; i >= 0; i-- {
		var err error
		switch kind, name, _ := strings.Cut(created[i], "/"); kind {
		case "node":
			err = core.Nodes().Delete(ctx, name, metav1.DeleteOptions{})
			if lerr := o.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, name, metav1.DeleteOptions{}); lerr != nil && !apierrors.IsNotFound(lerr) {
				errs = append(errs, fmt.Errorf("delete lease of node %s: %w", name, lerr))
			}
		case "namespace":
			err = core.Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", created[i], err))
		}
	}
	// Namespaces finish deleting in the background; waiting for them
	// tells the user that nothing was left behind.
	for _, what := range created {
		kind, name, _ := strings.Cut(what, "/")
		if kind != "namespace" {
			continue
		}
		err := waitFor(ctx, 2*time.Minute, "namespace "+name+" to be deleted", func() (bool, error) {
			_, err := core.Namespaces().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// parallel runs fn for 0..n-1 on up to workers goroutines and stops at the
// first error, which it returns.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(workers, 1), n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// waitFor polls cond every 100 ms until it holds, fails, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
