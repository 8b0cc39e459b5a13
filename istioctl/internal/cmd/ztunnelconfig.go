package cmd

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/ztunnelconfig"
)

func newZtunnelConfig(flags *kube.Flags) *cobra.Command {
	var node, namespace, output string
	cmd := &cobra.Command{
		Use:   "ztunnel-config workloads|services|policies|certificates|connections|all [ztunnel-pod[.namespace]]",
		Short: "Show what a ztunnel knows: workloads, services, policies, certificates, connections",
		Long: `Read one ztunnel's config dump (its admin port 15000, localhost only, reached
through a port-forward) and print a section of it. The ztunnel is the one named,
else the one on --node, else the first running one.`,
		Example: `  istioctl ztunnel-config workloads
  istioctl ztunnel-config services --node worker-1 -n default
  istioctl ztunnel-config certificates ztunnel-x7k2p.istio-system -o json`,
		Aliases:   []string{"zc"},
		Args:      cobra.RangeArgs(1, 2),
		ValidArgs: ztunnelconfig.Sections,
		RunE: func(cmd *cobra.Command, args []string) error {
			section := args[0]
			if !slices.Contains(ztunnelconfig.Sections, section) {
				return fmt.Errorf("unknown section %q: want one of %s", section, strings.Join(ztunnelconfig.Sections, ", "))
			}
			switch output {
			case ztunnelconfig.OutputShort, ztunnelconfig.OutputJSON, ztunnelconfig.OutputYAML:
			default:
				return fmt.Errorf("output format %q: want short, json or yaml", output)
			}
			podName, podNS := "", flags.IstioNamespace
			if len(args) == 2 {
				podName, podNS = kube.SplitPodArg(args[1], flags.IstioNamespace)
			}
			clients, err := flags.Clients()
			if err != nil {
				return err
			}
			pods, err := listPods(cmd.Context(), clients, podNS, kube.ZtunnelSelector)
			if err != nil {
				return err
			}
			pod, err := kube.SelectPod(pods, "ztunnel", podNS, podName, node)
			if err != nil {
				return err
			}
			body, err := kube.PodGet(cmd.Context(), clients.Config, clients.Kube, pod, ztunnelconfig.AdminPort, ztunnelconfig.DumpPath)
			if err != nil {
				return err
			}
			d, err := ztunnelconfig.Parse(body)
			if err != nil {
				return fmt.Errorf("ztunnel %s/%s: %w", pod.Namespace, pod.Name, err)
			}
			return ztunnelconfig.Write(out(cmd), d, section, ztunnelconfig.Options{Namespace: namespace, Output: output})
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "read the ztunnel on this node")
	f.StringVarP(&namespace, "workload-namespace", "n", "", "show only what belongs to this namespace")
	f.StringVarP(&output, "output", "o", ztunnelconfig.OutputShort, "output format: short, json or yaml")
	return cmd
}
