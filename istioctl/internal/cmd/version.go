package cmd

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/proxystatus"
	"github.com/ambient-mesh/mesh/pkg/version"
)

func newVersion(flags *kube.Flags) *cobra.Command {
	var remote bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of istioctl, the control plane and the node proxies",
		Long: `Print istioctl's version and, with --remote (the default), the control plane's
(istiod pods' image tags), the ztunnels' (their image tags) and the data plane's
(the versions the proxies connected to istiod report).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := out(cmd)
			fmt.Fprintf(w, "client version: %s\n", version.Version)
			if !remote {
				return nil
			}
			clients, err := flags.Clients()
			if err != nil {
				return err
			}
			ns := flags.IstioNamespace
			istiods, err := listPods(cmd.Context(), clients, ns, kube.IstiodSelector)
			if err != nil {
				return err
			}
			ztunnels, err := listPods(cmd.Context(), clients, ns, kube.ZtunnelSelector)
			if err != nil {
				return err
			}
			if len(istiods) == 0 {
				fmt.Fprintf(w, "control plane version: none (no istiod pods in namespace %s)\n", ns)
			} else {
				fmt.Fprintf(w, "control plane version: %s\n", summarize(imageTags(istiods, "discovery"), "pod"))
			}
			if len(ztunnels) == 0 {
				fmt.Fprintf(w, "ztunnel version: none (no ztunnel pods in namespace %s)\n", ns)
			} else {
				fmt.Fprintf(w, "ztunnel version: %s\n", summarize(imageTags(ztunnels, "istio-proxy"), "pod"))
			}
			proxies := map[string]int{}
			reached := false
			for i := range istiods {
				p := &istiods[i]
				if p.Status.Phase != corev1.PodRunning {
					continue
				}
				b, err := kube.PodGet(cmd.Context(), clients.Config, clients.Kube, p, proxystatus.MonitoringPort, proxystatus.ConnectionsPath)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: istiod %s: %v\n", p.Name, err)
					continue
				}
				conns, err := proxystatus.ParseConnections(b)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: istiod %s: %v\n", p.Name, err)
					continue
				}
				reached = true
				for _, c := range conns.Connections {
					v := c.ProxyVersion
					if v == "" {
						v = "unknown"
					}
					proxies[v]++
				}
			}
			if reached {
				if len(proxies) == 0 {
					fmt.Fprintln(w, "data plane version: none (no proxies connected)")
				} else {
					fmt.Fprintf(w, "data plane version: %s\n", summarize(proxies, "proxy"))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&remote, "remote", true, "also show the cluster's versions")
	return cmd
}

// imageTags counts pods by the image tag of their container named
// container (the first container when none has that name).
func imageTags(pods []corev1.Pod, container string) map[string]int {
	out := map[string]int{}
	for _, p := range pods {
		if len(p.Spec.Containers) == 0 {
			continue
		}
		c := p.Spec.Containers[0]
		for _, cc := range p.Spec.Containers {
			if cc.Name == container {
				c = cc
			}
		}
		out[kube.ImageTag(c.Image)]++
	}
	return out
}

// summarize prints version counts the way istioctl version does:
// "1.2.3 (2 pods), 1.2.4 (1 pod)".
func summarize(counts map[string]int, noun string) string {
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(counts)) {
		n := counts[v]
		plural := noun + "s"
		if noun == "proxy" {
			plural = "proxies"
		}
		if n == 1 {
			plural = noun
		}
		parts = append(parts, fmt.Sprintf("%s (%d %s)", v, n, plural))
	}
	return strings.Join(parts, ", ")
}
