//go:build !linux

package redirecttest

import (
	"testing"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
)

// Run skips: redirection lives in Linux network namespaces.
func Run(t *testing.T, _ func(t *testing.T) redirect.Mode) {
	t.Skip("redirecttest needs Linux network namespaces")
}
