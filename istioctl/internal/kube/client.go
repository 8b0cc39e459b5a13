package kube

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// DefaultIstioNamespace is where the mesh is installed unless -i says otherwise.
const DefaultIstioNamespace = "istio-system"

// Flags are the standard kube flags: --kubeconfig, --context and
// -i/--istioNamespace.
type Flags struct {
	ConfigFlags    *genericclioptions.ConfigFlags
	IstioNamespace string
	// ClientsFunc, when set, replaces building clients from the flags
	// (tests use fake clients).
	ClientsFunc func() (*Clients, error)
}

// NewFlags returns unbound flags with their defaults.
func NewFlags() *Flags {
	cf := genericclioptions.NewConfigFlags(true)
	return &Flags{ConfigFlags: cf, IstioNamespace: DefaultIstioNamespace}
}

// AddFlags declares the flags on fs.
func (f *Flags) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(f.ConfigFlags.KubeConfig, "kubeconfig", "", "Kubernetes configuration file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(f.ConfigFlags.Context, "context", "", "Kubernetes configuration context to use")
	fs.StringVarP(&f.IstioNamespace, "istioNamespace", "i", DefaultIstioNamespace, "namespace the mesh's control plane and node agents run in")
}

// Getter returns the REST client getter (what Helm's SDK wants), bound to
// the Istio namespace.
func (f *Flags) Getter() *genericclioptions.ConfigFlags {
	ns := f.IstioNamespace
	f.ConfigFlags.Namespace = &ns
	return f.ConfigFlags
}

// Clients are the Kubernetes clients istioctl uses.
type Clients struct {
	Config  *rest.Config
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
}

// Clients builds the clients from the flags.
func (f *Flags) Clients() (*Clients, error) {
	if f.ClientsFunc != nil {
		return f.ClientsFunc()
	}
	cfg, err := f.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	return NewClients(cfg)
}

// NewClients builds the clients for cfg.
func NewClients(cfg *rest.Config) (*Clients, error) {
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return &Clients{Config: cfg, Kube: kc, Dynamic: dc}, nil
}
