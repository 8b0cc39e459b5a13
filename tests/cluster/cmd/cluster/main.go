// Command cluster brings the local multi-node Kubernetes cluster up and down.
//
//	cluster up | down | status | load-images | kubeconfig
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/ambient-mesh/mesh/tests/cluster"
)

func main() {
	cfg := cluster.Config{Out: os.Stdout}
	flag.IntVar(&cfg.Nodes, "nodes", envInt("NODES", 2), "number of worker nodes (env NODES)")
	flag.StringVar(&cfg.StateDir, "state", env("CLUSTER_STATE", ".cache/cluster"), "directory for the cluster's state (env CLUSTER_STATE)")
	flag.StringVar(&cfg.KubeBinDir, "kube-bin", env("KUBE_BIN", ""), "directory with the Kubernetes binaries (env KUBE_BIN)")
	flag.StringVar(&cfg.ImagesDir, "images", env("IMAGES_DIR", ".cache/images"), "directory of OCI image archives to import into every node (env IMAGES_DIR)")
	flag.StringVar(&cfg.CNIPluginDir, "cni-plugins", env("CNI_PLUGINS", "/usr/lib/cni"), "directory of the reference CNI plugins (env CNI_PLUGINS)")
	flag.StringVar(&cfg.PauseImage, "pause-image", env("PAUSE_IMAGE", ""), "pod sandbox image (env PAUSE_IMAGE)")
	flag.StringVar(&cfg.CoreDNSImage, "coredns-image", env("COREDNS_IMAGE", ""), "CoreDNS image (env COREDNS_IMAGE)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] up|down|status|load-images|kubeconfig\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	for _, p := range []*string{&cfg.StateDir, &cfg.KubeBinDir, &cfg.ImagesDir} {
		if abs, err := absPath(*p); err == nil {
			*p = abs
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch flag.Arg(0) {
	case "up":
		err = cfg.Up(ctx)
	case "down":
		err = cfg.Down()
	case "status":
		if !cfg.Running(ctx) {
			fmt.Println("cluster: not running")
			os.Exit(1)
		}
		fmt.Printf("cluster: running; kubeconfig: %s\n", cfg.AdminKubeconfig())
	case "load-images":
		err = cfg.LoadImages()
	case "kubeconfig":
		fmt.Println(cfg.AdminKubeconfig())
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster %s: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func absPath(p string) (string, error) {
	if p == "" {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil || (len(p) > 0 && p[0] == '/') {
		return p, err
	}
	return wd + "/" + p, nil
}
