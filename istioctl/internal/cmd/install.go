package cmd

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"sigs.k8s.io/yaml"

	"github.com/ambient-mesh/mesh/charts"
	"github.com/ambient-mesh/mesh/istioctl/internal/install"
	"github.com/ambient-mesh/mesh/istioctl/internal/kube"
	"github.com/ambient-mesh/mesh/istioctl/internal/values"
)

type installOptions struct {
	sets    []string
	files   []string
	yes     bool
	dryRun  bool
	timeout time.Duration
}

func newInstall(flags *kube.Flags) *cobra.Command {
	var o installOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade the ambient mesh",
		Long: `Install the mesh's charts (base, istiod, cni, ztunnel) as the Helm releases
istio-base, istiod, istio-cni and ztunnel in the Istio namespace, waiting for
each to be ready before the next. Releases that exist are upgraded, so running
install again applies changed settings; helm list and helm upgrade work on the
releases too.

Settings use IstioOperator paths:
  profile, hub, tag      every chart (profile, global.hub, global.tag)
  values.global.X        every chart's global.X
  meshConfig.X           istiod's and ztunnel's meshConfig.X
  values.pilot.X         istiod's pilot.X
  values.cni.X           the cni chart's X
  values.ztunnel.X       the ztunnel chart's X
  values.base.X          the base chart's X
  values.X               istiod's X (other keys)
Only the ambient profile exists: this mesh is ambient only.

Without -y, install asks for confirmation when stdin is a terminal; when stdin
is not a terminal (scripts, CI) it proceeds as if -y were given.`,
		Example: `  istioctl install --set profile=ambient -y
  istioctl install --set values.ztunnel.logLevel=debug --set tag=1.2.3
  istioctl install -f my-operator.yaml --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			perChart, err := chartValues(o.files, o.sets)
			if err != nil {
				return err
			}
			if o.dryRun {
				return dryRun(cmd, out(cmd), flags.IstioNamespace, perChart)
			}
			in, err := confirmedInstaller(cmd, flags, o.yes, o.timeout, "install the ambient mesh into")
			if in == nil {
				return err
			}
			return in.Install(cmd.Context(), perChart)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.sets, "set", nil, "set an IstioOperator path, e.g. --set profile=ambient or --set values.ztunnel.logLevel=debug (repeatable)")
	f.StringArrayVarP(&o.files, "filename", "f", nil, "IstioOperator file (or a bare spec: profile, hub, tag, meshConfig, values); repeatable, later ones win, --set wins over all")
	f.BoolVarP(&o.yes, "skip-confirmation", "y", false, "do not ask for confirmation")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the manifests that would be installed, without touching the cluster")
	f.DurationVar(&o.timeout, "readiness-timeout", 5*time.Minute, "how long to wait for each chart's workloads to become ready")
	return cmd
}

// chartValues reads the -f files and --set flags into each chart's values.
func chartValues(files, sets []string) (map[string]map[string]any, error) {
	var specs []values.Spec
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		s, err := values.ParseFile(name, data)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	spec, err := values.Build(specs, sets)
	if err != nil {
		return nil, err
	}
	return values.ChartValues(spec)
}

func dryRun(cmd *cobra.Command, w io.Writer, namespace string, perChart map[string]map[string]any) error {
	for _, name := range charts.Order {
		r, err := install.Render(cmd.Context(), name, namespace, perChart[name])
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "# Release %s (chart %s) in namespace %s\n", r.Release, r.Chart, namespace)
		if vals := perChart[name]; len(vals) > 0 {
			b, err := yaml.Marshal(vals)
			if err != nil {
				return err
			}
			fmt.Fprintln(w, "# with values:")
			for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
				fmt.Fprintf(w, "#   %s\n", l)
			}
		}
		if r.CRDs != "" {
			fmt.Fprintln(w, r.CRDs)
		}
		if m := strings.TrimSpace(r.Manifest); m != "" {
			if !strings.HasPrefix(m, "---") {
				fmt.Fprintln(w, "---")
			}
			fmt.Fprintln(w, m)
		}
	}
	return nil
}

// confirmedInstaller asks on a terminal, unless yes, whether to "<action>
// namespace N of cluster C", then connects to the cluster. It returns nil
// when the user declined (and an error only if something failed).
func confirmedInstaller(cmd *cobra.Command, flags *kube.Flags, yes bool, timeout time.Duration, action string) (*install.Installer, error) {
	if !yes && term.IsTerminal(int(os.Stdin.Fd())) {
		ok, err := confirm(cmd.InOrStdin(), out(cmd), fmt.Sprintf("This will %s namespace %s of %s. Proceed? (y/N) ", action, flags.IstioNamespace, clusterName(flags)))
		if err != nil || !ok {
			fmt.Fprintln(out(cmd), "Cancelled.")
			return nil, err
		}
	}
	clients, err := flags.Clients()
	if err != nil {
		return nil, err
	}
	return &install.Installer{Getter: flags.Getter(), Clients: clients, Namespace: flags.IstioNamespace, Timeout: timeout, Out: out(cmd)}, nil
}

func confirm(in io.Reader, w io.Writer, prompt string) (bool, error) {
	fmt.Fprint(w, prompt)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// clusterName names the kubeconfig context in use, for prompts.
func clusterName(flags *kube.Flags) string {
	if c := *flags.ConfigFlags.Context; c != "" {
		return "context " + c
	}
	raw, err := flags.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
	if err != nil || raw.CurrentContext == "" {
		return "the current cluster"
	}
	return "context " + raw.CurrentContext
}

func newUninstall(flags *kube.Flags) *cobra.Command {
	var purge, yes bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the ambient mesh",
		Long: `Remove the mesh's Helm releases: istio-cni first (so the CNI node agent sees
its DaemonSet go and cleans up the nodes), then ztunnel, istiod and istio-base,
waiting for each one's pods to go. The base chart's CRDs (and the Istio
resources stored in them) are kept unless --purge is given. The namespace is
kept.

Without -y, uninstall asks for confirmation when stdin is a terminal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			what := "remove the ambient mesh from"
			if purge {
				what = "remove the ambient mesh and its CRDs (with every Istio resource in them) from"
			}
			in, err := confirmedInstaller(cmd, flags, yes, timeout, what)
			if in == nil {
				return err
			}
			return in.Uninstall(cmd.Context(), purge)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&purge, "purge", false, "also delete the base chart's CRDs")
	f.BoolVarP(&yes, "skip-confirmation", "y", false, "do not ask for confirmation")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for each release's pods to go")
	return cmd
}
