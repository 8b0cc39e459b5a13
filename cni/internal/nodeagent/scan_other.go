//go:build !linux

package nodeagent

import (
	"context"
	"errors"
	"os"

	corev1 "k8s.io/api/core/v1"
)

// ScanProc needs Linux network namespaces.
func ScanProc(context.Context, *corev1.Pod) (*os.File, error) {
	return nil, errors.New("finding a pod's network namespace needs Linux")
}
