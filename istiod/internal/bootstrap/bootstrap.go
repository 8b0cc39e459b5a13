// Package bootstrap holds the set-up that istiod's commands share: their
// logger, their Kubernetes client, and the certificate authority's
// Kubernetes side (signing material, pod index, root publisher and the
// IstioCertificateService server).
package bootstrap

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/ambient-mesh/mesh/istiod/internal/ca"
	"github.com/ambient-mesh/mesh/pkg/kubeconfig"
)

// loadTimeout bounds loading or creating the signing authority.
const loadTimeout = time.Minute

// Logger returns a logger at level ("debug", "info", "warn" or "error")
// writing to w, as JSON or as text, with component=istiod.
func Logger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if json {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("component", "istiod"), nil
}

// KubeClient returns a client for the cluster of the kubeconfig file, or
// for the cluster it runs in if kubeconfig is empty.
func KubeClient(kubeconfig string) (kubernetes.Interface, error) {
	c, err := NewClients(kubeconfig)
	if err != nil {
		return nil, err
	}
	return c.Kube, nil
}

// Clients are the typed clients istiod reads the cluster with: core
// Kubernetes, Istio's APIs (istio.io/client-go) and the Gateway API.
type Clients struct {
	Kube    kubernetes.Interface
	Istio   istioclient.Interface
	Gateway gatewayclient.Interface
}

// NewClients returns clients for the cluster of the kubeconfig file, or for
// the cluster it runs in if kubeconfig is empty.
func NewClients(kubeconfigPath string) (*Clients, error) {
	cfg, err := kubeconfig.Load(kubeconfigPath)
	if err != nil {
		return nil, err
	}
	// istiod lists every pod and service at start; client-go's default of
	// 5 requests a second would make a large cluster's first sync crawl.
	cfg.QPS, cfg.Burst = 100, 200
	c := &Clients{}
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	if c.Istio, err = istioclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("istio client: %w", err)
	}
	if c.Gateway, err = gatewayclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("gateway API client: %w", err)
	}
	return c, nil
}

// Served reports whether the API server serves resource (plural, for
// example "authorizationpolicies") in groupVersion (for example
// "security.istio.io/v1"). istiod watches a custom resource only when its
// CRD is installed: an informer on a missing resource would never sync.
func Served(d discovery.DiscoveryInterface, groupVersion, resource string) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(groupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", groupVersion, err)
	}
	for _, r := range list.APIResources {
		if r.Name == resource {
			return true, nil
		}
	}
	return false, nil
}

// CAOptions configures StartCA. The zero value of each field other than
// Namespace and TrustDomain is istiod's behaviour.
type CAOptions struct {
	// Namespace holds the CA secrets (istiod's namespace).
	Namespace   string
	TrustDomain string
	// NodeAccounts is a comma-separated list of the "namespace/serviceaccount"
	// names allowed to impersonate workloads on their node.
	NodeAccounts string
	// RootSelector is a label selector of the namespaces the root is
	// published to; every namespace if empty. SelectorFlag names the flag
	// it came from, in the error when it does not parse.
	RootSelector string
	SelectorFlag string
	// NoRootPublisher leaves the istio-ca-root-cert ConfigMaps alone.
	NoRootPublisher bool
	// NodeFromPodOnly ignores the node a caller's token names, so that the
	// server finds it from the caller's pod, as with API servers that do
	// not set the claim.
	NodeFromPodOnly bool
	// WaitForSync makes StartCA wait for the pod index to sync before it
	// starts the root publisher and returns.
	WaitForSync bool
	Log         *slog.Logger
}

// CA is a running certificate authority: register Server on a gRPC server
// and call Stop when done.
type CA struct {
	Authority *ca.Authority
	Pods      *ca.PodIndex
	Server    *ca.Server
	// Log is the CA's logger (subsystem=ca).
	Log *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartCA loads or creates the signing authority from the secrets in
// o.Namespace, starts the pod index and, unless o.NoRootPublisher, the root
// publisher, and returns the CA with its server configured. They run until
// ctx is done or Stop is called.
func StartCA(ctx context.Context, client kubernetes.Interface, o CAOptions) (*CA, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var selector labels.Selector
	if o.RootSelector != "" {
		var err error
		if selector, err = labels.Parse(o.RootSelector); err != nil {
			return nil, fmt.Errorf("-%s: %w", o.SelectorFlag, err)
		}
	}

	caLog := log.With("subsystem", "ca")
	loadCtx, cancel := context.WithTimeout(ctx, loadTimeout)
	authority, source, err := ca.LoadOrCreate(loadCtx, client, o.Namespace, caLog)
	cancel()
	if err != nil {
		return nil, err
	}
	caLog.Info("signing authority ready", "source", source)

	ctx, cancel = context.WithCancel(ctx)
	pods, err := ca.NewPodIndex(ctx, client, log.With("subsystem", "pod-index"))
	if err != nil {
		cancel()
		return nil, err
	}
	c := &CA{Authority: authority, Pods: pods, Log: caLog, cancel: cancel}
	if o.WaitForSync {
		if err := pods.WaitForSync(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if !o.NoRootPublisher {
		p := &ca.RootPublisher{Client: client, RootPEM: authority.RootPEM(), NamespaceSelector: selector, Log: log.With("subsystem", "root-publisher")}
		c.wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				log.Error("root publisher stopped", "error", err)
			}
		})
	}

	var auth ca.Authenticator = &ca.TokenReviewer{Client: client}
	if o.NodeFromPodOnly {
		auth = podNodeOnly{auth}
	}
	c.Server = &ca.Server{
		Authority:           authority,
		TrustDomain:         o.TrustDomain,
		Authenticate:        auth,
		Pods:                pods,
		TrustedNodeAccounts: splitList(o.NodeAccounts),
		Log:                 caLog,
	}
	return c, nil
}

// Stop stops the pod index and the root publisher and waits for them.
func (c *CA) Stop() {
	c.cancel()
	c.Pods.Stop()
	c.wg.Wait()
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
