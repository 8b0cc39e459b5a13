package cmd

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/proxystatus"
)

func newProxyStatus(flags *kube.Flags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy-status",
		Short: "List the proxies connected to istiod and how far each is in sync",
		Long: `Ask every running istiod (its monitoring port 15014, through a port-forward)
for its xDS connections and their sync state, and print one line per proxy:
per workload discovery type SYNCED (the last response was ACKed), STALE (it
awaits its ACK), NACKED (it was rejected), NOT SENT (nothing sent yet) or
IGNORED (not subscribed).`,
		Aliases: []string{"ps"},
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			clients, err := flags.Clients()
			if err != nil {
				return err
			}
			pods, err := listPods(cmd.Context(), clients, flags.IstioNamespace, kube.IstiodSelector)
			if err != nil {
				return err
			}
			var rows []proxystatus.Row
			var errs []error
			running := 0
			for i := range pods {
				p := &pods[i]
				if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
					continue
				}
				running++
				r, err := istiodRows(cmd, clients, p)
				if err != nil {
					errs = append(errs, fmt.Errorf("istiod %s: %w", p.Name, err))
					continue
				}
				rows = append(rows, r...)
			}
			if running == 0 {
				_, err := kube.SelectPod(pods, "istiod", flags.IstioNamespace, "", "")
				return err
			}
			if len(errs) == running {
				return errors.Join(errs...)
			}
			for _, e := range errs {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", e)
			}
			return proxystatus.Write(out(cmd), rows)
		},
	}
	return cmd
}

func istiodRows(cmd *cobra.Command, clients *kube.Clients, pod *corev1.Pod) ([]proxystatus.Row, error) {
	b, err := kube.PodGet(cmd.Context(), clients.Config, clients.Kube, pod, proxystatus.MonitoringPort, proxystatus.ConnectionsPath)
	if err != nil {
		return nil, err
	}
	conns, err := proxystatus.ParseConnections(b)
	if err != nil {
		return nil, err
	}
	b, err = kube.PodGet(cmd.Context(), clients.Config, clients.Kube, pod, proxystatus.MonitoringPort, proxystatus.SynczPath)
	if err != nil {
		return nil, err
	}
	sync, err := proxystatus.ParseSyncz(b)
	if err != nil {
		return nil, err
	}
	return proxystatus.Rows(pod.Name, conns, sync), nil
}
