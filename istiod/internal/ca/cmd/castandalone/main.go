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
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/ambient-mesh/mesh/istiod/internal/bootstrap"
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
	log, err := bootstrap.Logger(os.Stderr, o.logLevel, false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "castandalone: -log-level: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("CA failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	client, err := bootstrap.KubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	certAuthority, err := bootstrap.StartCA(ctx, client, bootstrap.CAOptions{
		Namespace: o.namespace, TrustDomain: o.trustDomain, NodeAccounts: o.nodeAccounts,
		RootSelector: o.namespaceSelector, SelectorFlag: "namespace-selector",
		NoRootPublisher: !o.publishRoot, NodeFromPodOnly: !o.nodeFromToken, WaitForSync: true, Log: log,
	})
	if err != nil {
		return err
	}
	defer certAuthority.Stop()
	srv, caLog := certAuthority.Server, certAuthority.Log
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
