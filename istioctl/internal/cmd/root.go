// Package cmd holds istioctl's commands.
package cmd

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
)

// NewRoot returns the istioctl command tree.
func NewRoot() *cobra.Command {
	return newRoot(kube.NewFlags())
}

func newRoot(flags *kube.Flags) *cobra.Command {
	root := &cobra.Command{
		Use:           "istioctl",
		Short:         "Install and inspect the ambient mesh",
		Long:          "istioctl installs the ambient mesh and shows what its control plane and node proxies know.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	flags.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newInstall(flags),
		newUninstall(flags),
		newZtunnelConfig(flags),
		newVersion(flags),
		newProxyStatus(flags),
		newWaypoint(flags),
	)
	return root
}

// listPods lists the pods of namespace matching selector.
func listPods(ctx context.Context, c *kube.Clients, namespace, selector string) ([]corev1.Pod, error) {
	l, err := c.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list pods %s in namespace %s: %w", selector, namespace, err)
	}
	return l.Items, nil
}

func out(cmd *cobra.Command) io.Writer { return cmd.OutOrStdout() }
