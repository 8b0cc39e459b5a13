// Command ztunnel is the mesh's per-node proxy: it serves the enrolled pods
// the node agent hands it over ZDS, with listeners inside each pod's network
// namespace, and carries their traffic between nodes as HBONE.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ambient-mesh/mesh/pkg/rpc"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/pkg/zds"
	"github.com/ambient-mesh/mesh/ztunnel/internal/admin"
	"github.com/ambient-mesh/mesh/ztunnel/internal/ca"
	"github.com/ambient-mesh/mesh/ztunnel/internal/metrics"
	"github.com/ambient-mesh/mesh/ztunnel/internal/proxy"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
	"github.com/ambient-mesh/mesh/ztunnel/internal/xds"
)

// version is set at build time.
var version = "dev"

type options struct {
	xdsAddress, caAddress string
	rootCert, serverName  string
	plaintextXDS          bool
	tokenPath             string
	zdsSocket             string
	nodeName, podName     string
	podNamespace, podIP   string
	clusterID             string
	trustDomain           string
	adminAddr             string
	metricsAddr           string
	readinessAddr         string
	certTTL               time.Duration
	drainTimeout          time.Duration
	terminationGrace      time.Duration
	logLevel, logFormat   string
	cpuProfile            string
	maxStreamsPerConn     int
}

// env returns the environment variable or def, so that every flag can
// also be set the way a Kubernetes manifest sets things.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.StringVar(&o.xdsAddress, "xds-address", env("XDS_ADDRESS", "istiod.istio-system.svc:15012"), "istiod's xDS address (host:port, or unix:///path)")
	fs.StringVar(&o.caAddress, "ca-address", env("CA_ADDRESS", ""), "the CA's address; the xDS address if empty")
	fs.StringVar(&o.rootCert, "root-cert", env("ROOT_CERT", "/var/run/secrets/istio/root-cert.pem"), "PEM roots that istiod's serving certificate chains to")
	fs.StringVar(&o.serverName, "xds-server-name", env("XDS_SERVER_NAME", "istiod.istio-system.svc"), "name istiod's certificate must carry")
	fs.BoolVar(&o.plaintextXDS, "plaintext-xds", env("PLAINTEXT_XDS", "") == "true", "talk to istiod without TLS (its 15010); the CA still needs TLS in a cluster")
	fs.StringVar(&o.tokenPath, "token-path", env("TOKEN_PATH", "/var/run/secrets/tokens/istio-token"), "projected ServiceAccount token (audience istio-ca)")
	fs.StringVar(&o.zdsSocket, "zds-socket", env("ZDS_SOCKET", zds.DefaultSocketPath), "the node agent's ZDS socket")
	fs.StringVar(&o.nodeName, "node-name", env("NODE_NAME", ""), "this node's name")
	fs.StringVar(&o.podName, "pod-name", env("POD_NAME", "ztunnel"), "ztunnel's own pod name")
	fs.StringVar(&o.podNamespace, "pod-namespace", env("POD_NAMESPACE", "istio-system"), "ztunnel's own namespace")
	fs.StringVar(&o.podIP, "pod-ip", env("INSTANCE_IP", ""), "ztunnel's own IP, for its xDS node id")
	fs.StringVar(&o.clusterID, "cluster-id", env("CLUSTER_ID", "Kubernetes"), "cluster name sent to istiod")
	fs.StringVar(&o.trustDomain, "trust-domain", env("TRUST_DOMAIN", "cluster.local"), "the mesh trust domain")
	fs.StringVar(&o.adminAddr, "admin-address", env("ADMIN_ADDRESS", "127.0.0.1:15000"), "admin endpoint (config dump, log level)")
	fs.StringVar(&o.metricsAddr, "metrics-address", env("METRICS_ADDRESS", ":15020"), "Prometheus metrics endpoint")
	fs.StringVar(&o.readinessAddr, "readiness-address", env("READINESS_ADDRESS", ":15021"), "readiness endpoint (/healthz/ready)")
	fs.DurationVar(&o.certTTL, "cert-ttl", 24*time.Hour, "validity asked for workload certificates")
	fs.DurationVar(&o.drainTimeout, "pod-drain-timeout", 5*time.Second, "how long a removed pod's connections may run on")
	fs.DurationVar(&o.terminationGrace, "termination-drain-duration", 25*time.Second, "how long connections may run on after SIGTERM")
	fs.StringVar(&o.logLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", env("LOG_FORMAT", "json"), "json or text")
	maxStreams := env("POOL_MAX_STREAMS_PER_CONNECTION", "100")
	fs.Func("pool-max-streams-per-connection", "tunnels one pooled HBONE connection carries before the next is opened (default 100)", func(v string) error {
		maxStreams = v
		return nil
	})
	fs.StringVar(&o.cpuProfile, "cpu-profile", env("CPU_PROFILE", ""), "write a CPU profile to this file until exit, %p replaced by the pid (for performance work)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.caAddress == "" {
		o.caAddress = o.xdsAddress
	}
	n, err := strconv.Atoi(maxStreams)
	if err != nil || n < 1 || n > 100 {
		return nil, fmt.Errorf("--pool-max-streams-per-connection (POOL_MAX_STREAMS_PER_CONNECTION) %q: want 1 to 100, the streams istiod's and our HBONE servers accept", maxStreams)
	}
	o.maxStreamsPerConn = n
	if o.nodeName == "" {
		return nil, errors.New("--node-name (NODE_NAME) is required")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		slog.Error("ztunnel failed", "error", err)
		os.Exit(1)
	}
}

func run(o *options) error {
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, hopts)
	if o.logFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, hopts)
	}
	log := slog.New(h)
	slog.SetDefault(log)
	if o.cpuProfile != "" {
		f, err := os.Create(strings.ReplaceAll(o.cpuProfile, "%p", strconv.Itoa(os.Getpid())))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	xdsConn, err := dialIstiod(o, o.xdsAddress, o.plaintextXDS)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	defer xdsConn.Close()
	caConn := xdsConn
	if o.caAddress != o.xdsAddress || o.plaintextXDS {
		if caConn, err = dialIstiod(o, o.caAddress, false); err != nil {
			return fmt.Errorf("ca: %w", err)
		}
		defer caConn.Close()
	}

	store := state.New()
	store.Warn = log.With("component", "xds").Warn
	token := func() (string, error) {
		b, err := os.ReadFile(o.tokenPath)
		return strings.TrimSpace(string(b)), err
	}
	certs := ca.NewManager(ca.NewClient(caConn, token, o.certTTL), log.With("component", "ca"))
	defer certs.Close()
	m := metrics.New(version)
	px := proxy.New(proxy.Config{
		Store:        store,
		Certs:        certs,
		TrustDomain:  o.trustDomain,
		Metrics:      m,
		Log:          log.With("component", "proxy"),
		DrainTimeout: o.drainTimeout,

		MaxStreamsPerConn: o.maxStreamsPerConn,
	})

	var synced sync.Map // type URL -> true
	var zdsConnected atomic.Bool
	ready := func() (bool, string) {
		var missing []string
		for _, t := range xds.Types {
			if _, ok := synced.Load(t); !ok {
				missing = append(missing, "xDS "+t[strings.LastIndex(t, ".")+1:])
			}
		}
		if !zdsConnected.Load() || !px.Synced() {
			missing = append(missing, "ZDS snapshot")
		}
		if len(missing) > 0 {
			return false, "waiting for " + strings.Join(missing, ", ")
		}
		return true, ""
	}

	var servers []*http.Server
	serve := func(addr string, handler http.Handler) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() { _ = srv.Serve(ln) }()
		return nil
	}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", m.Handler())
	metricsMux.Handle("/stats/prometheus", m.Handler())
	src := admin.Sources{Store: store, Certs: certs.Certificates, Proxy: px, Level: level, Ready: ready}
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{o.adminAddr, admin.Admin(src)}, {o.metricsAddr, metricsMux}, {o.readinessAddr, admin.Readiness(ready)}} {
		if err := serve(s.addr, s.h); err != nil {
			return err
		}
	}

	node := &xdsapi.Node{
		Id:               fmt.Sprintf("ztunnel~%s~%s.%s~%s.svc.cluster.local", o.podIP, o.podName, o.podNamespace, o.podNamespace),
		Cluster:          o.clusterID,
		UserAgentName:    "ztunnel",
		UserAgentVersion: version,
	}
	if md, err := structpb.NewStruct(map[string]any{"NODE_NAME": o.nodeName, "CLUSTER_ID": o.clusterID, "NAMESPACE": o.podNamespace, "NAME": o.podName}); err == nil {
		node.Metadata = md
	}
	// Pods are taken from the node agent only once both xDS types have
	// synced: a pod's listeners join its capture (SO_REUSEPORT beside a
	// ztunnel being replaced), and a connection accepted before the
	// services and policies are known could only be refused.
	xdsSynced := make(chan struct{})
	var syncedOnce sync.Once
	var xdsToken func() (string, error)
	if !o.plaintextXDS { // never a bearer token over plaintext
		xdsToken = token
	}
	xc := &xds.Client{Conn: xdsConn, Node: node, Store: store, Log: log.With("component", "xds"), Token: xdsToken,
		OnSynced: func(t string) {
			synced.Store(t, true)
			for _, t := range xds.Types {
				if _, ok := synced.Load(t); !ok {
					return
				}
			}
			syncedOnce.Do(func() { close(xdsSynced) })
		}}

	var wg sync.WaitGroup
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	wg.Add(2)
	go func() { defer wg.Done(); xc.Run(runCtx) }()
	go func() {
		defer wg.Done()
		select {
		case <-xdsSynced:
		case <-ctx.Done():
			return
		}
		log.Info("xDS synced; taking pods from the node agent")
		runZDS(ctx, o.zdsSocket, px, &zdsConnected, log.With("component", "zds"))
	}()
	log.Info("ztunnel started", "version", version, "node", o.nodeName, "xds", o.xdsAddress, "zds", o.zdsSocket)

	<-ctx.Done()
	// Drain: the node agent's connection is closed (ZDS stopped with ctx),
	// pods stop accepting, and open connections get the grace period.
	// xDS keeps running meanwhile, so they keep being routed and authorized.
	log.Info("draining", "grace", o.terminationGrace)
	dctx, cancel := context.WithTimeout(context.Background(), o.terminationGrace)
	px.Shutdown(dctx)
	cancel()
	cancelRun()
	wg.Wait()
	for _, s := range servers {
		_ = s.Close()
	}
	log.Info("ztunnel stopped")
	return nil
}

// runZDS keeps a connection to the node agent, with backoff between
// attempts.
func runZDS(ctx context.Context, path string, px *proxy.Proxy, connected *atomic.Bool, log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		px.BeginSnapshot()
		start := time.Now()
		c := &zds.Client{Path: path, Handle: px.HandleZDS, Logger: log, OnConnect: func() { connected.Store(true) }}
		err := c.Run(ctx)
		connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("node agent connection ended", "error", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// dialIstiod prepares calls to istiod (xDS or CA), over TLS verified
// against the mesh roots unless plaintext is asked for.
func dialIstiod(o *options, addr string, plaintext bool) (*rpc.Conn, error) {
	opts := rpc.Options{MaxRecvSize: maxIstiodMessage, UserAgent: "ztunnel/" + version}
	if !plaintext {
		pemRoots, err := os.ReadFile(o.rootCert)
		if err != nil {
			return nil, fmt.Errorf("istiod roots: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemRoots) {
			return nil, fmt.Errorf("istiod roots: no certificate in %s", o.rootCert)
		}
		opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: o.serverName}
	}
	return rpc.Dial(addr, opts), nil
}

// maxIstiodMessage bounds one message from istiod. gRPC's default, 4 MiB,
// is smaller than istiod's first workload response in a cluster of about
// 8,000 pods; the buffer grows only as far as a message needs.
const maxIstiodMessage = 256 << 20
