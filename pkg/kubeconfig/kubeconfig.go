// Package kubeconfig finds the Kubernetes client configuration the mesh's
// components run with: a kubeconfig file when one is named, else the
// in-cluster configuration of their pod.
package kubeconfig

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load returns the configuration of the kubeconfig file at path, or the
// in-cluster one when path is empty.
func Load(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	return cfg, nil
}
