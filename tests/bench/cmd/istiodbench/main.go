// Command istiodbench measures istiod at scale against the real API server
// of the local cluster (make cluster-up). It starts istiod, subscribes one
// client to it the way a ztunnel does, creates Services and pods, and
// prints how long each pod took from the write of its status (the moment
// it gets an IP and becomes a workload) to its arrival at the client, the
// bytes pushed per change, and istiod's memory, next to the issue's
// targets. Nothing is asserted.
//
//	go run ./tests/bench/cmd/istiodbench [-pods 5000] [-services 1000]
//
// The pods never run: they are bound to fake Node objects that have no
// kubelet (the bench keeps them Ready by renewing their leases), and the
// bench writes the pods' status itself. Everything it creates (two
// namespaces, the nodes and their leases) carries the label
// istiodbench/run=<id> and is deleted at the end, also on failure or
// interrupt.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/ambient-mesh/mesh/tests/adsclient"
	"github.com/ambient-mesh/mesh/tests/procstat"
)

type config struct {
	kubeconfig     string
	istiod         string
	pods           int
	services       int
	nodes          int
	podChanges     int
	serviceChanges int
	workers        int
	qps            float64
	burst          int
	arrivalTimeout time.Duration
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", defaultKubeconfig(), "kubeconfig of the cluster (default $KUBECONFIG, else the local cluster's)")
	flag.StringVar(&cfg.istiod, "istiod", "", "istiod binary to run; built from this repository if empty")
	flag.IntVar(&cfg.pods, "pods", 5000, "pods to create")
	flag.IntVar(&cfg.services, "services", 1000, "Services to create; pod i is selected by Service i mod services")
	flag.IntVar(&cfg.nodes, "nodes", 4, "fake nodes the pods are bound to")
	flag.IntVar(&cfg.podChanges, "pod-changes", 50, "single pod label changes measured after the load")
	flag.IntVar(&cfg.serviceChanges, "service-changes", 20, "single Service port changes measured after the load")
	flag.IntVar(&cfg.workers, "workers", 32, "concurrent API requests while creating")
	flag.Float64Var(&cfg.qps, "qps", 500, "API requests per second while creating")
	flag.IntVar(&cfg.burst, "burst", 1000, "API request burst while creating")
	flag.DurationVar(&cfg.arrivalTimeout, "arrival-timeout", 3*time.Minute, "how long after the last write every pod and Service may take to reach the client")
	verbose := flag.Bool("v", false, "log more progress to stderr")
	flag.Parse()
	if cfg.pods < 1 || cfg.services < 0 || cfg.nodes < 1 || cfg.workers < 1 || cfg.qps <= 0 {
		fmt.Fprintln(os.Stderr, "istiodbench: -pods, -nodes, -workers and -qps must be positive, -services not negative")
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Signals cancel the run; its deferred cleanup still deletes what it
	// created.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, cfg, log)
	stop()
	if rep != nil {
		rep.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "istiodbench:", err)
		os.Exit(1)
	}
}

func defaultKubeconfig() string {
	if k := os.Getenv("KUBECONFIG"); k != "" {
		return k
	}
	return filepath.Join(".cache", "cluster", "admin.kubeconfig")
}

func run(ctx context.Context, cfg config, log *slog.Logger) (rep *report, err error) {
	var seed [4]byte
	_, _ = rand.Read(seed[:])
	id := hex.EncodeToString(seed[:3])

	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s (is the cluster up? make cluster-up): %w", cfg.kubeconfig, err)
	}
	// The bench paces its own requests (see objects.limiter), so that a
	// write's send time is when it leaves, not when client-go lets it.
	restCfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	restCfg.UserAgent = "istiodbench"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, err
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = client.CoreV1().Namespaces().Get(vctx, "default", metav1.GetOptions{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("API server of %s not reachable (is the cluster up? make cluster-up): %w", cfg.kubeconfig, err)
	}

	tmp, err := os.MkdirTemp("", "istiodbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := cfg.istiod
	if bin == "" {
		log.Info("building istiod")
		if bin, err = buildIstiod(ctx, tmp); err != nil {
			return nil, err
		}
	}

	nodes := make([]string, cfg.nodes)
	for i := range nodes {
		nodes[i] = nodeName(id, i)
	}
	o := &objects{
		client:    client,
		id:        id,
		namespace: "bench-istiod-" + id,
		system:    "bench-istiod-" + id + "-system",
		nodes:     nodes,
		ips:       newPodIPs(binary.BigEndian.Uint32(seed[:])),
		services:  cfg.services,
		limiter:   flowcontrol.NewTokenBucketRateLimiter(float32(cfg.qps), cfg.burst),
		workers:   cfg.workers,
		log:       log,
	}
	defer func() {
		log.Info("cleaning up", "namespaces", []string{o.namespace, o.system}, "nodes", len(nodes))
		cctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		if cerr := o.cleanup(cctx, cfg.pods); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup (delete by hand what carries the label %s=%s): %w", runLabel, id, cerr))
		}
	}()
	log.Info("creating namespaces and fake nodes", "namespace", o.namespace, "nodes", len(nodes))
	if err := o.setup(ctx); err != nil {
		return nil, err
	}

	p, err := startIstiod(ctx, bin, istiodArgs(ctx, bin, cfg.kubeconfig, o.system, runLabel+"="+id), filepath.Join(tmp, "istiod.log"))
	if err != nil {
		return nil, err
	}
	defer p.stop()
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "istiodbench: istiod's log, last lines:\n%s\n", p.logTail(40))
		}
	}()
	if err := p.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	log.Info("istiod ready", "pid", p.pid(), "grpc", p.grpcAddr)

	rep = &report{
		commit: commit(), cpus: runtime.NumCPU(), pods: cfg.pods, services: cfg.services,
		nodes: cfg.nodes, namespace: o.namespace,
	}
	rep.loadBefore = loadAverage()
	if rep.memIdle, err = procstat.ReadMemory(p.pid()); err != nil {
		return nil, err
	}

	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	c, err := adsclient.Start(ctx, cc, adsclient.Options{
		NodeID: "ztunnel~10.255.0.1~ztunnel-bench." + o.system + "~" + o.system + ".svc." + domainSuffix,
		Types:  []string{adsclient.AddressType, adsclient.AuthorizationType},
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.WaitSynced(sctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("client's first responses: %w", err)
	}
	rep.initialAddresses = c.Held(adsclient.AddressType)
	synced := c.ResponseCount()
	for _, r := range c.Responses(0) {
		rep.initialBytes += r.Size
	}

	// The bulk load: Services first, as a Deployment's Service usually
	// exists before its pods; then pods, each created and given its status.
	watched := make([]string, 0, cfg.pods+cfg.services)
	for i := range cfg.pods {
		watched = append(watched, podUID(o.namespace, podName(i)))
	}
	for i := range cfg.services {
		watched = append(watched, serviceName(o.namespace, svcName(i)))
	}
	track := newTracker(c, synced, watched)
	cpu0, err := procstat.CPU(p.pid())
	if err != nil {
		return nil, err
	}
	loadStart := time.Now()

	log.Info("creating Services", "count", cfg.services)
	svcWrites, err := o.createServices(ctx, cfg.services)
	if err != nil {
		return nil, err
	}
	rep.servicesCreate = time.Since(loadStart)
	log.Info("creating pods and writing their status", "count", cfg.pods)
	podStart := time.Now()
	podTimes, err := o.createPods(ctx, cfg.pods, func(done int) {
		log.Info("pods written", "done", done, "addresses_at_client", c.Held(adsclient.AddressType))
	})
	if err != nil {
		return nil, err
	}
	rep.podsCreate = time.Since(podStart)
	if err := p.alive(); err != nil {
		return nil, err
	}
	log.Info("waiting for every pod and Service at the client")
	if err := track.wait(ctx, cfg.arrivalTimeout); err != nil {
		return nil, err
	}
	if err := waitQuiet(ctx, c, time.Second, time.Minute); err != nil {
		return nil, fmt.Errorf("settling after the load: %w", err)
	}
	track.read()
	cpu1, err := procstat.CPU(p.pid())
	if err != nil {
		return nil, err
	}
	rep.cpuBulk, rep.cpuBulkWall = cpu1-cpu0, time.Since(loadStart)
	rep.bulkResponses, rep.bulkBytes, rep.bulkLargest = track.responses, track.bytes, track.largest

	var podLat, afterWrite, writeLat, svcLat, svcWriteLat []time.Duration
	var firstSent, lastDone, lastArrived time.Time
	for i, t := range podTimes {
		a := track.arrived[i]
		podLat = append(podLat, a.Sub(t.statusSent))
		afterWrite = append(afterWrite, a.Sub(t.statusDone))
		writeLat = append(writeLat, t.statusDone.Sub(t.statusSent))
		if firstSent.IsZero() || t.statusSent.Before(firstSent) {
			firstSent = t.statusSent
		}
		if t.statusDone.After(lastDone) {
			lastDone = t.statusDone
		}
		if a.After(lastArrived) {
			lastArrived = a
		}
	}
	for i, w := range svcWrites {
		svcLat = append(svcLat, track.arrived[cfg.pods+i].Sub(w.sent))
		svcWriteLat = append(svcWriteLat, w.done.Sub(w.sent))
	}
	rep.podArrival, rep.statusWrite, rep.serviceArrival = summarize(podLat), summarize(writeLat), summarize(svcLat)
	rep.podAfterWrite, rep.serviceWrite = summarize(afterWrite), summarize(svcWriteLat)
	rep.batch, rep.drain = lastArrived.Sub(firstSent), lastArrived.Sub(lastDone)
	if rep.memLoaded, err = procstat.ReadMemory(p.pid()); err != nil {
		return nil, err
	}
	log.Info("bulk load done", "pod_p99", ms(rep.podArrival.p99), "rss", mib(rep.memLoaded.RSS))

	ours := func(name string) bool {
		return strings.HasPrefix(name, o.namespace+"/") || strings.HasPrefix(name, podUID(o.namespace, ""))
	}
	const quiet = 300 * time.Millisecond
	pods := o.client.CoreV1().Pods(o.namespace)
	var cs []change
	log.Info("measuring single pod changes", "count", cfg.podChanges)
	for k := range cfg.podChanges {
		i := k * cfg.pods / max(cfg.podChanges, 1)
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"r%d"}}}`, revisionLabel, k)
		ch, err := measureChange(ctx, c, ours, []string{podUID(o.namespace, podName(i))}, quiet, func(ctx context.Context) error {
			_, err := pods.Patch(ctx, podName(i), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("pod change %d: %w", k, err)
		}
		if len(ch.extra) > 0 {
			log.Info("a pod change brought more than its workload", "change", k, "extra", ch.extra)
		}
		cs = append(cs, ch)
	}
	rep.podChanges = newChangeStats(fmt.Sprintf("pod label (canonical revision), %d changes: 1 workload each", cfg.podChanges), cs)

	if cfg.services > 0 && cfg.serviceChanges > 0 {
		svcs := o.client.CoreV1().Services(o.namespace)
		cs = cs[:0]
		selected := (cfg.pods + cfg.services - 1) / cfg.services
		log.Info("measuring single Service changes", "count", cfg.serviceChanges)
		for k := range cfg.serviceChanges {
			j := k * cfg.services / cfg.serviceChanges
			expect := []string{serviceName(o.namespace, svcName(j))}
			for i := j; i < cfg.pods; i += cfg.services {
				expect = append(expect, podUID(o.namespace, podName(i)))
			}
			patch := fmt.Sprintf(`{"spec":{"ports":[{"port":80,"targetPort":%d}]}}`, 9000+k)
			ch, err := measureChange(ctx, c, ours, expect, quiet, func(ctx context.Context) error {
				_, err := svcs.Patch(ctx, svcName(j), types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
				return err
			})
			if err != nil {
				return rep, fmt.Errorf("service change %d: %w", k, err)
			}
			if len(ch.extra) > 0 {
				log.Info("a Service change brought more than the Service and its workloads", "change", k, "extra", ch.extra)
			}
			cs = append(cs, ch)
		}
		rep.serviceChanges = newChangeStats(fmt.Sprintf("Service target port, %d changes: the Service and its ~%d workloads each", cfg.serviceChanges, selected), cs)
	}

	rep.loadAfter = loadAverage()
	if rep.memFinal, err = procstat.ReadMemory(p.pid()); err != nil {
		return rep, err
	}
	if err := p.alive(); err != nil {
		return rep, err
	}
	if err := c.Err(); err != nil {
		return rep, fmt.Errorf("client stream: %w", err)
	}
	return rep, nil
}

// commit names the measured tree for the record, "unknown" outside git.
func commit() string {
	out, err := exec.Command("git", "log", "-1", "--format=%h %s").Output()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(out))
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		s += " (with uncommitted changes)"
	}
	return s
}
