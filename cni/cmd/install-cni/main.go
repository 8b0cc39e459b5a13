// Command install-cni is the CNI node agent, run by the istio-cni-node
// DaemonSet on every node. It:
//
//   - installs the istio-cni plugin binary into the node's CNI bin dir and
//     its entry at the end of the primary network's conflist, and keeps it
//     there;
//   - serves the plugin's API on a unix socket (agentapi), enrolling pods as
//     their sandboxes are created: redirection in the pod's network
//     namespace, then the namespace handed to ztunnel over ZDS;
//   - watches its node's pods and their namespaces, enrolling and releasing
//     running pods when labels change, and capturing pods that started
//     while it was away;
//   - serves ZDS to the node's ztunnel on /var/run/ztunnel/ztunnel.sock.
//
// At start it probes the kernel and says which redirection mode runs and
// why. On SIGTERM it leaves the plugin installed (pods keep being
// enrolled, fail closed, while it restarts or upgrades) unless its
// DaemonSet is gone, which is an uninstall.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/ambient-mesh/mesh/cni/internal/agentapi"
	"github.com/ambient-mesh/mesh/cni/internal/hostprobe"
	"github.com/ambient-mesh/mesh/cni/internal/install"
	"github.com/ambient-mesh/mesh/cni/internal/nodeagent"
	"github.com/ambient-mesh/mesh/cni/internal/plugin"
	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/pkg/kubeconfig"
	"github.com/ambient-mesh/mesh/pkg/zds"
)

type options struct {
	kubeconfig, nodeName, podName, podNamespace string
	netDir, binDir, pluginBinary, runDir        string
	zdsSocket, mode, excluded, readyAddr        string
	logLevel, repair                            string
	dnsCapture                                  bool
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("install-cni", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration if empty")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (env NODE_NAME)")
	fs.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "this agent's pod name, to tell an uninstall from a restart (env POD_NAME)")
	fs.StringVar(&o.podNamespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "this agent's namespace (env POD_NAMESPACE)")
	fs.StringVar(&o.netDir, "cni-net-dir", "/host/etc/cni/net.d", "the node's CNI config dir, as mounted")
	fs.StringVar(&o.binDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI plugin dir, as mounted")
	fs.StringVar(&o.pluginBinary, "plugin-binary", "/opt/cni/bin/istio-cni", "the istio-cni plugin binary to install")
	fs.StringVar(&o.runDir, "run-dir", agentapi.DefaultRunDir, "dir of the plugin API socket, shared with the node")
	fs.StringVar(&o.zdsSocket, "zds-socket", zds.DefaultSocketPath, "ZDS socket ztunnel connects to")
	fs.StringVar(&o.mode, "redirect-mode", "auto", "redirection mode: auto, ebpf or nftables")
	fs.StringVar(&o.excluded, "excluded-namespaces", "kube-system", "comma-separated namespaces never enrolled (the agent's own is added)")
	fs.StringVar(&o.readyAddr, "ready-addr", ":8000", "HTTP address of /readyz")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.dnsCapture, "dns-capture", false, "send enrolled pods' DNS to ztunnel (15053)")
	fs.StringVar(&o.repair, "repair", nodeagent.RepairCapture, "running pods that should be in the mesh and are not: capture (in place), label, or delete (so they restart captured)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.nodeName == "" {
		return nil, errors.New("-node-name (or NODE_NAME) is required")
	}
	switch o.repair {
	case nodeagent.RepairCapture, nodeagent.RepairLabel, nodeagent.RepairDelete:
	default:
		return nil, fmt.Errorf("-repair %q: want capture, label or delete", o.repair)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "install-cni: %v\n", err)
		os.Exit(2)
	}
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "install-cni: -log-level: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("component", "cni-agent", "node", o.nodeName)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("node agent failed", "error", err)
		os.Exit(1)
	}
}

// chooseMode probes the kernel and picks the redirection mode, saying why.
func chooseMode(want string, log *slog.Logger) (redirect.Mode, error) {
	report := redirect.Probe()
	for _, s := range report.Modes {
		if s.Err != nil {
			log.Info("redirection mode unavailable", "mode", s.Mode, "why", s.Err.Error())
		}
	}
	name := want
	if want == "auto" {
		name = report.Preferred()
		if name == "" {
			return nil, fmt.Errorf("no redirection mode works on this kernel:\n%s", report)
		}
	} else if !report.Supported(name) {
		return nil, fmt.Errorf("redirection mode %q was asked for but does not work on this kernel:\n%s", name, report)
	}
	log.Info("redirection mode", "mode", name, "asked", want)
	switch name {
	case "ebpf":
		return redirect.NewEBPF(log.With("subsystem", "ebpf")), nil
	case "nftables":
		return redirect.NFTables{}, nil
	}
	return nil, fmt.Errorf("unknown redirection mode %q (auto, ebpf or nftables)", name)
}

func run(ctx context.Context, o *options, log *slog.Logger) error {
	mode, err := chooseMode(o.mode, log)
	if err != nil {
		return err
	}
	client, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	excluded := map[string]bool{}
	var excludedList []string
	for _, ns := range strings.Split(o.excluded+","+o.podNamespace, ",") {
		if ns = strings.TrimSpace(ns); ns != "" && !excluded[ns] {
			excluded[ns] = true
			excludedList = append(excludedList, ns)
		}
	}
	// The agent runs in the node's network namespace (hostNetwork): the
	// probe rewrite goes there.
	probes := &hostprobe.SNAT{}
	if err := probes.Install(nil); err != nil {
		return fmt.Errorf("kubelet probe source rule: %w", err)
	}
	agent := nodeagent.New(nodeagent.Config{
		NodeName: o.nodeName, Client: client, Mode: mode, DNSCapture: o.dnsCapture, Probes: probes, Repair: o.repair,
		Policy: nodeagent.Policy{ExcludedNamespaces: excluded}, Log: log.With("subsystem", "agent"),
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// Serve before installing the plugin: from the moment the conflist
	// names it, every new sandbox on the node calls the API.
	zdsLn, err := zds.Listen(o.zdsSocket)
	if err != nil {
		return fmt.Errorf("zds socket %s: %w", o.zdsSocket, err)
	}
	wg.Go(func() {
		if err := agent.ZDS().Serve(ctx, zdsLn); err != nil {
			log.Error("zds server failed", "error", err)
			cancel()
		}
	})
	apiLn, err := agentapi.Listen(agentapi.SocketPath(o.runDir))
	if err != nil {
		return err
	}
	api := &http.Server{Handler: agentapi.Handler(agent), ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() {
		if err := api.Serve(apiLn); !errors.Is(err, http.ErrServerClosed) {
			log.Error("plugin API server failed", "error", err)
			cancel()
		}
	})
	defer api.Close()
	// From the start, so that the DaemonSet's deletion is seen while the
	// agent may still watch it (see ownerWatch).
	owner := &ownerWatch{client: client, namespace: o.podNamespace, pod: o.podName, log: log}
	if o.podName != "" && o.podNamespace != "" {
		wg.Go(func() { owner.run(ctx) })
	}
	agentErr := make(chan error, 1)
	wg.Go(func() { agentErr <- agent.Run(ctx) })

	installer, err := install.New(install.Config{
		NetDir: o.netDir, BinDir: o.binDir, Binary: o.pluginBinary,
		Settings: plugin.Settings{AgentRunDir: o.runDir, ExcludeNamespaces: excludedList},
		Log:      log.With("subsystem", "install"),
	})
	if err != nil {
		return err
	}
	conf, err := installer.Install()
	if err != nil {
		return fmt.Errorf("install the plugin: %w", err)
	}
	log.Info("plugin installed", "conflist", conf)
	// Watch is stopped, and waited for, before an uninstall: a look of
	// its after the entry is gone would put it back.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	wg.Go(func() {
		defer close(watchDone)
		installer.Watch(watchCtx)
	})

	ready := &http.Server{Addr: o.readyAddr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if err := agent.Status(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})}
	wg.Go(func() {
		if err := ready.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			log.Error("readiness server failed", "error", err)
		}
	})
	defer ready.Close()

	select {
	case <-ctx.Done():
	case err := <-agentErr:
		if err != nil {
			return err
		}
	}
	log.Info("stopping")
	stopWatch()
	<-watchDone
	if owner.uninstalling() {
		if err := installer.Uninstall(); err != nil {
			log.Error("uninstall the plugin", "error", err)
		} else {
			log.Info("plugin uninstalled: the agent's DaemonSet is gone")
		}
		if err := probes.Remove(); err != nil {
			log.Error("remove the probe source rule", "error", err)
		}
	}
	return nil
}

func kubeClient(path string) (kubernetes.Interface, error) {
	cfg, err := kubeconfig.Load(path)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}
