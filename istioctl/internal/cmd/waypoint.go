package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/ambient-mesh/mesh/istioctl/internal/install"
	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/waypoint"
)

type waypointOptions struct {
	flags     *kube.Flags
	namespace string
	name      string
	forType   string
}

// ns is -n, else the kubeconfig context's namespace, else default.
func (o *waypointOptions) ns() string {
	if o.namespace != "" {
		return o.namespace
	}
	if ns, _, err := o.flags.ConfigFlags.ToRawKubeConfigLoader().Namespace(); err == nil && ns != "" {
		return ns
	}
	return "default"
}

func (o *waypointOptions) gateways(c *kube.Clients, ns string) dynamic.ResourceInterface {
	return c.Dynamic.Resource(waypoint.GatewayGVR).Namespace(ns)
}

func newWaypoint(flags *kube.Flags) *cobra.Command {
	o := &waypointOptions{flags: flags}
	cmd := &cobra.Command{
		Use:   "waypoint",
		Short: "Manage waypoints: Gateways of class istio-waypoint",
		Long: `Manage waypoints. A waypoint is a Gateway API Gateway of class istio-waypoint
with one listener {mesh, 15008, HBONE}; istiod deploys it. Services (by default),
workloads or both use it when they, or their namespace, carry the label
istio.io/use-waypoint=<name>.`,
	}
	cmd.PersistentFlags().StringVarP(&o.namespace, "namespace", "n", "", "namespace of the waypoint (default: the kubeconfig context's, else default)")
	cmd.AddCommand(
		newWaypointGenerate(o),
		newWaypointApply(o),
		newWaypointList(o),
		newWaypointDelete(o),
		newWaypointStatus(o),
	)
	return cmd
}

func addNameFor(cmd *cobra.Command, o *waypointOptions) {
	cmd.Flags().StringVar(&o.name, "name", waypoint.DefaultName, "name of the waypoint")
	cmd.Flags().StringVar(&o.forType, "for", "service", "traffic the waypoint handles: service, workload, all or none (label istio.io/waypoint-for)")
}

func newWaypointGenerate(o *waypointOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Print a waypoint's Gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := waypoint.Validate(o.name, o.forType); err != nil {
				return err
			}
			y, err := waypoint.YAML(waypoint.Gateway(o.name, o.ns(), o.forType))
			if err != nil {
				return err
			}
			fmt.Fprint(out(cmd), y)
			return nil
		},
	}
	addNameFor(cmd, o)
	return cmd
}

func newWaypointApply(o *waypointOptions) *cobra.Command {
	var enroll, overwrite, wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Create or update a waypoint, optionally enrolling its namespace",
		Example: `  istioctl waypoint apply -n default --enroll-namespace --wait
  istioctl waypoint apply --name reviews-wp --for workload`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := waypoint.Validate(o.name, o.forType); err != nil {
				return err
			}
			ns := o.ns()
			c, err := o.flags.Clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var nsObj *corev1.Namespace
			change := false
			if enroll {
				nsObj, err = c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("namespace %s: %w", ns, err)
				}
				// Check before changing anything, so a refusal changes nothing.
				if change, err = waypoint.EnrollDecision(ns, nsObj.Labels[waypoint.LabelUseWaypoint], o.name, overwrite); err != nil {
					return err
				}
			}
			if err := applyGateway(ctx, o.gateways(c, ns), waypoint.Gateway(o.name, ns, o.forType)); err != nil {
				return fmt.Errorf("apply waypoint %s/%s: %w", ns, o.name, err)
			}
			fmt.Fprintf(out(cmd), "✅ waypoint %s/%s applied\n", ns, o.name)
			if change {
				patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{waypoint.LabelUseWaypoint: o.name}}})
				if _, err := c.Kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
					return fmt.Errorf("label namespace %s: %w", ns, err)
				}
				fmt.Fprintf(out(cmd), "✅ namespace %s labeled with \"%s: %s\"\n", ns, waypoint.LabelUseWaypoint, o.name)
			}
			if wait {
				return waitProgrammed(cmd, o, c, ns, o.name, timeout)
			}
			return nil
		},
	}
	addNameFor(cmd, o)
	f := cmd.Flags()
	f.BoolVar(&enroll, "enroll-namespace", false, "label the namespace istio.io/use-waypoint=<name>, so its services use the waypoint")
	f.BoolVar(&overwrite, "overwrite", false, "with --enroll-namespace: replace the waypoint the namespace already uses")
	f.BoolVarP(&wait, "wait", "w", false, "wait for the waypoint to be programmed (ready)")
	f.DurationVar(&timeout, "timeout", time.Minute, "with --wait: how long to wait")
	return cmd
}

// applyGateway creates gw, or updates the existing Gateway's spec and
// istioctl's labels (keeping other labels and annotations).
func applyGateway(ctx context.Context, gws dynamic.ResourceInterface, gw *unstructured.Unstructured) error {
	cur, err := gws.Get(ctx, gw.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = gws.Create(ctx, gw, metav1.CreateOptions{FieldManager: "istioctl"})
		return err
	}
	if err != nil {
		return err
	}
	if !waypoint.IsWaypoint(cur) {
		class, _, _ := unstructured.NestedString(cur.Object, "spec", "gatewayClassName")
		return fmt.Errorf("a gateway of class %q has that name; not replaced", class)
	}
	labels := cur.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	for k, v := range gw.GetLabels() {
		labels[k] = v
	}
	cur.SetLabels(labels)
	cur.Object["spec"] = gw.Object["spec"]
	_, err = gws.Update(ctx, cur, metav1.UpdateOptions{FieldManager: "istioctl"})
	return err
}

// waitProgrammed polls the Gateway until Programmed is True; on timeout it
// explains with the Gateway's conditions and its pods.
func waitProgrammed(cmd *cobra.Command, o *waypointOptions, c *kube.Clients, ns, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	last := ""
	for {
		gw, err := o.gateways(c, ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			status, why := waypoint.Programmed(gw)
			if status == "True" {
				fmt.Fprintf(out(cmd), "✅ waypoint %s/%s is ready\n", ns, name)
				return nil
			}
			if why != last {
				fmt.Fprintf(out(cmd), "  waiting for waypoint %s/%s: %s\n", ns, name, why)
				last = why
			}
		} else if ctx.Err() == nil {
			return fmt.Errorf("read waypoint %s/%s: %w", ns, name, err)
		}
		select {
		case <-ctx.Done():
			return notProgrammedError(c, ns, name, timeout, last)
		case <-time.After(time.Second):
		}
	}
}

func notProgrammedError(c *kube.Clients, ns, name string, timeout time.Duration, why string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var pods []corev1.Pod
	if l, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: waypoint.LabelGatewayName + "=" + name}); err == nil {
		pods = l.Items
	}
	var events []corev1.Event
	if l, err := c.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"}); err == nil {
		events = l.Items
	}
	desc := install.DescribeNotReady(install.Object{Kind: "Gateway", Name: name, Namespace: ns}, install.Progress{Desired: 1, Detail: why}, pods, events)
	if len(pods) == 0 {
		desc += fmt.Sprintf("\n  no waypoint pods (label %s=%s): istiod deploys them; is it running?", waypoint.LabelGatewayName, name)
	}
	return fmt.Errorf("waypoint %s/%s not programmed after %s:\n%s", ns, name, timeout, desc)
}

func newWaypointList(o *waypointOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List waypoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.flags.Clients()
			if err != nil {
				return err
			}
			var ri dynamic.ResourceInterface = o.gateways(c, o.ns())
			if all {
				ri = c.Dynamic.Resource(waypoint.GatewayGVR)
			}
			l, err := ri.List(cmd.Context(), metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list gateways: %w", err)
			}
			var wps []unstructured.Unstructured
			for i := range l.Items {
				if waypoint.IsWaypoint(&l.Items[i]) {
					wps = append(wps, l.Items[i])
				}
			}
			if len(wps) == 0 {
				fmt.Fprintln(out(cmd), "No waypoints found.")
				return nil
			}
			return waypoint.WriteList(out(cmd), wps, all)
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the waypoints of every namespace")
	return cmd
}

func newWaypointDelete(o *waypointOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "delete [NAME...]",
		Short: "Delete waypoints (the one named waypoint when no name is given)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all && len(args) > 0 {
				return errors.New("give waypoint names or --all, not both")
			}
			ns := o.ns()
			c, err := o.flags.Clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			gws := o.gateways(c, ns)
			names := args
			if all {
				l, err := gws.List(ctx, metav1.ListOptions{})
				if err != nil {
					return fmt.Errorf("list gateways in %s: %w", ns, err)
				}
				for i := range l.Items {
					if waypoint.IsWaypoint(&l.Items[i]) {
						names = append(names, l.Items[i].GetName())
					}
				}
				if len(names) == 0 {
					fmt.Fprintf(out(cmd), "No waypoints found in namespace %s.\n", ns)
					return nil
				}
			} else if len(names) == 0 {
				names = []string{waypoint.DefaultName}
			}
			var errs []error
			for _, name := range names {
				gw, err := gws.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					errs = append(errs, fmt.Errorf("waypoint %s/%s: %w", ns, name, err))
					continue
				}
				if !waypoint.IsWaypoint(gw) {
					class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
					errs = append(errs, fmt.Errorf("gateway %s/%s is not a waypoint (class %q, not %q); not deleted", ns, name, class, waypoint.GatewayClass))
					continue
				}
				if err := gws.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("delete waypoint %s/%s: %w", ns, name, err))
					continue
				}
				fmt.Fprintf(out(cmd), "waypoint %s/%s deleted\n", ns, name)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "delete every waypoint in the namespace")
	return cmd
}

func newWaypointStatus(o *waypointOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a waypoint's status conditions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns := o.ns()
			c, err := o.flags.Clients()
			if err != nil {
				return err
			}
			gw, err := o.gateways(c, ns).Get(cmd.Context(), o.name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("waypoint %s/%s: %w", ns, o.name, err)
			}
			if !waypoint.IsWaypoint(gw) {
				class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
				return fmt.Errorf("gateway %s/%s is not a waypoint (class %q, not %q)", ns, o.name, class, waypoint.GatewayClass)
			}
			return waypoint.WriteStatus(out(cmd), []unstructured.Unstructured{*gw})
		},
	}
	cmd.Flags().StringVar(&o.name, "name", waypoint.DefaultName, "name of the waypoint")
	return cmd
}
