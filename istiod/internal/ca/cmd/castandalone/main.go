// Command castandalone runs istiod's certificate authority on its own,
// Kubernetes side included: the signing material from Istio's secrets
// (created if absent), TokenReview authentication, the pod index that node
// impersonation checks, and the istio-ca-root-cert publisher. It serves
// IstioCertificateService over plain gRPC and prints "listening <address>"
// on standard output once it answers.
//
// It exists for the end-to-end suite, which drives the CA only through its
// wire protocol and cannot import istiod's internal packages, until the
// istiod binary serves the CA over TLS on 15012.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ambient-mesh/mesh/istiod/internal/ca"
)

type options struct {
	kubeconfig        string
	namespace         string
	listen            string
	trustDomain       string
	nodeAccounts      string
	publishRoot       bool
	namespaceSelector string
	nodeFromToken     bool
	logLevel          string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("castandalone", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; in-cluster configuration if empty")
	fs.StringVar(&o.namespace, "namespace", "istio-system", "namespace of the CA secrets (istiod's)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to serve plain gRPC on")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain of the issued identities")
	fs.StringVar(&o.nodeAccounts, "node-accounts", "istio-system/ztunnel", "comma-separated namespace/serviceaccount names allowed to impersonate workloads on their node")
	fs.BoolVar(&o.publishRoot, "publish-root", true, "publish the root as ConfigMap "+ca.RootCertConfigMap)
	fs.StringVar(&o.namespaceSelector, "namespace-selector", "", "label selector of the namespaces to publish the root to; all if empty")
	fs.BoolVar(&o.nodeFromToken, "node-from-token", true, "take a caller's node from its token's node-name claim; if false, only from its pod, as with API servers that do not set the claim")
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
		os.Exit(2)
	}
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "castandalone: -log-level: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "istiod")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("CA failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	var cfg *rest.Config
	var err error
	if o.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	var selector labels.Selector
	if o.namespaceSelector != "" {
		if selector, err = labels.Parse(o.namespaceSelector); err != nil {
			return fmt.Errorf("-namespace-selector: %w", err)
		}
	}

	loadCtx, cancel := context.WithTimeout(ctx, time.Minute)
	caLog := log.With("subsystem", "ca")
	authority, source, err := ca.LoadOrCreate(loadCtx, client, o.namespace, caLog)
	cancel()
	if err != nil {
		return err
	}
	caLog.Info("signing authority ready", "source", source)

	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	pods, err := ca.NewPodIndex(ctx, client, log.With("subsystem", "pod-index"))
	if err != nil {
		return err
	}
	defer pods.Stop()
	if err := pods.WaitForSync(ctx); err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancelAll()
	if o.publishRoot {
		p := &ca.RootPublisher{Client: client, RootPEM: authority.RootPEM(), NamespaceSelector: selector, Log: log.With("subsystem", "root-publisher")}
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				log.Error("root publisher stopped", "error", err)
			}
		})
	}

	var auth ca.Authenticator = &ca.TokenReviewer{Client: client}
	if !o.nodeFromToken {
		auth = podNodeOnly{auth}
	}
	srv := &ca.Server{
		Authority:           authority,
		TrustDomain:         o.trustDomain,
		Authenticate:        auth,
		Pods:                pods,
		TrustedNodeAccounts: splitList(o.nodeAccounts),
		Log:                 caLog,
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	caLog.Info("serving IstioCertificateService", "address", lis.Addr().String(), "node_accounts", srv.TrustedNodeAccounts, "node_from_token", o.nodeFromToken)
	fmt.Printf("listening %s\n", lis.Addr())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		g.Stop()
		<-stopped
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	caLog.Info("stopped", "issued", srv.Stats().Issued, "refused", srv.Stats().Refused)
	return nil
}

// podNodeOnly forgets the node a token names, so that the server finds it
// from the caller's pod instead.
type podNodeOnly struct{ ca.Authenticator }

func (a podNodeOnly) Authenticate(ctx context.Context, token string) (*ca.Caller, error) {
	c, err := a.Authenticator.Authenticate(ctx, token)
	if c != nil {
		c.NodeName = ""
	}
	return c, err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
