// Command istiod is the mesh's control plane: it serves workload discovery
// (istio.workload.Address over Delta ADS) translated from the cluster's
// Namespaces, Pods, Services, EndpointSlices, ServiceEntries and waypoint
// Gateways; L4 policy (istio.security.Authorization) translated from
// AuthorizationPolicies and PeerAuthentications; and issues workload
// certificates (IstioCertificateService). Mesh settings (trust domain, root
// namespace) come from the `istio` ConfigMap in its namespace, with the
// flags as defaults.
//
// It listens on four addresses: plaintext gRPC with ADS (15010), TLS gRPC
// with ADS and the CA (15012), under a serving certificate its own CA signs
// for istiod.<namespace>.svc; HTTP readiness at /ready (8080), 200 once
// its informers have synced; and HTTP monitoring (15014): /metrics and
// /debug. Once listening it prints
// "listening <grpc> <secure-grpc> <ready> <monitoring>" on standard output;
// logs are JSON on standard error. SIGTERM or SIGINT stops it.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	kcache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/bootstrap"
	"github.com/ambient-mesh/mesh/istiod/internal/controller"
	"github.com/ambient-mesh/mesh/istiod/internal/meshconfig"
	"github.com/ambient-mesh/mesh/istiod/internal/monitoring"
	"github.com/ambient-mesh/mesh/istiod/internal/policycontroller"
	"github.com/ambient-mesh/mesh/istiod/internal/workloads"
)

// servingCertTTL is the validity of istiod's own serving certificate; it
// is regenerated at every start.
const servingCertTTL = 365 * 24 * time.Hour

type options struct {
	kubeconfig   string
	namespace    string
	trustDomain  string
	clusterID    string
	domainSuffix string
	grpcAddr     string
	secureAddr   string
	readyAddr    string
	monitorAddr  string
	nodeAccounts string
	rootSelector string
	logLevel     string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("istiod", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration if empty")
	fs.StringVar(&o.namespace, "namespace", "istio-system", "istiod's namespace: its CA secrets and its service name")
	fs.StringVar(&o.trustDomain, "trust-domain", workloads.DefaultTrustDomain, "trust domain of workload identities, unless the mesh config sets one")
	fs.StringVar(&o.clusterID, "cluster-id", workloads.DefaultClusterID, "cluster id, part of workload uids")
	fs.StringVar(&o.domainSuffix, "domain-suffix", workloads.DefaultDomainSuffix, "cluster DNS domain suffix")
	fs.StringVar(&o.grpcAddr, "grpc-addr", ":15010", "plaintext gRPC address (ADS)")
	fs.StringVar(&o.secureAddr, "secure-grpc-addr", ":15012", "TLS gRPC address (ADS and the CA)")
	fs.StringVar(&o.readyAddr, "ready-addr", ":8080", "HTTP address of /ready")
	fs.StringVar(&o.monitorAddr, "monitoring-addr", ":15014", "HTTP address of /metrics (Prometheus) and the /debug endpoints")
	fs.StringVar(&o.nodeAccounts, "node-accounts", "istio-system/ztunnel", "comma-separated namespace/serviceaccount names allowed to impersonate workloads on their node")
	fs.StringVar(&o.rootSelector, "root-namespace-selector", "", "label selector of the namespaces to publish the root certificate ConfigMap to; all if empty")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "istiod: %v\n", err)
		os.Exit(2)
	}
	log, err := bootstrap.Logger(os.Stderr, o.logLevel, true)
	if err != nil {
		fmt.Fprintf(os.Stderr, "istiod: -log-level: %v\n", err)
		os.Exit(2)
	}
	klog.SetSlogLogger(log.With("subsystem", "client-go"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("istiod failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	clients, err := bootstrap.NewClients(o.kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancelAll()

	// Mesh settings first: the CA signs in the mesh's trust domain.
	meshWatch := meshconfig.NewWatcher(clients.Kube, o.namespace,
		meshconfig.Config{TrustDomain: o.trustDomain, RootNamespace: o.namespace}, log.With("subsystem", "meshconfig"))
	if err := meshWatch.Start(ctx); err != nil {
		return err
	}
	mesh := meshWatch.Current()

	certAuthority, err := bootstrap.StartCA(ctx, clients.Kube, bootstrap.CAOptions{
		Namespace: o.namespace, TrustDomain: mesh.TrustDomain, NodeAccounts: o.nodeAccounts,
		RootSelector: o.rootSelector, SelectorFlag: "root-namespace-selector", Log: log,
	})
	if err != nil {
		return err
	}
	defer certAuthority.Stop()
	caServer := certAuthority.Server
	dnsNames := []string{"istiod." + o.namespace + ".svc", "istiod." + o.namespace + ".svc." + o.domainSuffix}
	serving, err := certAuthority.Authority.ServingCertificate(dnsNames, servingCertTTL)
	if err != nil {
		return err
	}
	certAuthority.Log.Info("serving certificate issued", "dns_names", dnsNames, "expires", serving.Leaf.NotAfter)
	var podsSynced atomic.Bool
	wg.Go(func() {
		if err := certAuthority.Pods.WaitForSync(ctx); err == nil {
			podsSynced.Store(true)
		}
	})

	cache := ads.NewCache()
	workloadMesh := func(m meshconfig.Config) workloads.MeshConfig {
		return workloads.MeshConfig{ClusterID: o.clusterID, TrustDomain: m.TrustDomain, DomainSuffix: o.domainSuffix}
	}
	ctl, err := controller.New(clients, cache, workloadMesh(mesh), log.With("subsystem", "controller"))
	if err != nil {
		return err
	}
	policies, err := policycontroller.New(clients.Istio, clients.Kube.Discovery(), cache, mesh.RootNamespace, log.With("subsystem", "policy"))
	if err != nil {
		return err
	}
	ctl.SetPolicies(policies)
	policies.OnAttachmentChange(ctl.PoliciesChanged)
	applyMesh := func(m meshconfig.Config) {
		if m.TrustDomain != mesh.TrustDomain {
			log.Warn("the trust domain changed in the mesh config: workload identities follow now, the CA keeps signing for the one it started with until istiod restarts",
				"ca_trust_domain", mesh.TrustDomain, "mesh_trust_domain", m.TrustDomain)
		}
		ctl.SetMesh(workloadMesh(m))
		policies.SetRootNamespace(m.RootNamespace)
	}
	meshWatch.OnChange(applyMesh)
	if now := meshWatch.Current(); now != mesh {
		applyMesh(now) // changed while the rest was being set up
	}
	ctlErr := make(chan error, 2)
	wg.Go(func() { ctlErr <- policies.Run(ctx) })
	// Workloads are translated once the first policy set is built, so none
	// is served, and istiod is never ready, without the policies it lists.
	wg.Go(func() {
		if !kcache.WaitForCacheSync(ctx.Done(), policies.HasSynced) {
			ctlErr <- nil
			return
		}
		ctlErr <- ctl.Run(ctx)
	})

	adsServer := ads.NewServer(cache, log.With("subsystem", "ads"))
	plain := grpc.NewServer()
	adsServer.Register(plain)
	secure := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serving},
		MinVersion:   tls.VersionTLS12,
	})))
	adsServer.Register(secure)
	caServer.Register(secure)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ctl.HasSynced() || !policies.HasSynced() || !podsSynced.Load() {
			http.Error(w, "not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	httpServer := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	// Monitoring: metrics under Istio's names and the debug endpoints. It
	// keeps serving while the rest stops, and stops last.
	mon := monitoring.New(monitoring.Sources{ADS: adsServer, Cache: cache, CA: caServer}, log.With("subsystem", "monitoring"))
	adsServer.SetObserver(mon)
	monLis, err := net.Listen("tcp", o.monitorAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.monitorAddr, err)
	}
	monServer := &http.Server{Handler: mon.Handler(), ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := monServer.Serve(monLis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("monitoring server failed", "error", err)
		}
	})
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = monServer.Shutdown(shutdownCtx)
	}()
	log.Info("monitoring", "addr", monLis.Addr().String())

	var lis [3]net.Listener
	for i, addr := range []string{o.grpcAddr, o.secureAddr, o.readyAddr} {
		if lis[i], err = net.Listen("tcp", addr); err != nil {
			for _, l := range lis[:i] {
				l.Close()
			}
			return fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	served := make(chan error, 3)
	go func() { served <- plain.Serve(lis[0]) }()
	go func() { served <- secure.Serve(lis[1]) }()
	go func() { served <- httpServer.Serve(lis[2]) }()
	log.Info("serving", "grpc", lis[0].Addr().String(), "secure_grpc", lis[1].Addr().String(), "ready", lis[2].Addr().String(),
		"namespace", o.namespace, "cluster_id", o.clusterID, "trust_domain", mesh.TrustDomain, "root_namespace", mesh.RootNamespace, "node_accounts", caServer.TrustedNodeAccounts)
	fmt.Printf("listening %s %s %s %s\n", lis[0].Addr(), lis[1].Addr(), lis[2].Addr(), monLis.Addr())

	var failure error
	select {
	case err := <-served:
		failure = fmt.Errorf("serve: %w", err)
	case err := <-ctlErr:
		if err != nil && ctx.Err() == nil {
			failure = err
		}
	case <-ctx.Done():
	}
	cancelAll()
	log.Info("stopping")
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	_ = httpServer.Shutdown(shutdownCtx)
	// ADS streams never end on their own, so a graceful stop only gets a
	// moment to finish unary calls before the streams are cut.
	for _, g := range []*grpc.Server{plain, secure} {
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			g.Stop()
			<-stopped
		}
	}
	st := adsServer.Stats()
	log.Info("stopped", "pushes", st.Pushes, "resources_pushed", st.ResourcesPushed, "certificates_issued", caServer.Stats().Issued)
	return failure
}
