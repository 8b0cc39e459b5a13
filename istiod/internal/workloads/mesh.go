package workloads

// Defaults applied to empty MeshConfig fields. They match Istio's, so a mesh
// configured with nothing interoperates with a default Istio install.
const (
	DefaultClusterID    = "Kubernetes"
	DefaultTrustDomain  = "cluster.local"
	DefaultDomainSuffix = "cluster.local"
)

// MeshConfig holds the mesh-wide settings the translation needs. An empty
// field means its default; Network defaults to "" (the single unnamed network).
type MeshConfig struct {
	ClusterID    string
	Network      string
	TrustDomain  string
	DomainSuffix string
}

// withDefaults fills empty fields, so callers may pass a zero MeshConfig.
func (m MeshConfig) withDefaults() MeshConfig {
	if m.ClusterID == "" {
		m.ClusterID = DefaultClusterID
	}
	if m.TrustDomain == "" {
		m.TrustDomain = DefaultTrustDomain
	}
	if m.DomainSuffix == "" {
		m.DomainSuffix = DefaultDomainSuffix
	}
	return m
}

// serviceHostname is the cluster-local DNS name of a Service; it is both the
// Service resource's hostname and the key half of Workload.services.
func (m MeshConfig) serviceHostname(name, namespace string) string {
	return name + "." + namespace + ".svc." + m.DomainSuffix
}
