//go:build !linux

package netlab

import (
	"context"
	"errors"
	"os/exec"
)

// Network namespaces are Linux-only. These stubs keep the package, and its
// users' portable parts, building elsewhere.

var errUnsupported = errors.New("netlab needs Linux network namespaces")

// New fails: network namespaces are Linux-only.
func New(context.Context, string, []PodSpec) (*Topology, error) { return nil, errUnsupported }

// Close does nothing: nothing was created.
func (t *Topology) Close() error { return nil }

// InNetns fails.
func InNetns(string, func() error) error { return errUnsupported }

// StartInNetns fails.
func StartInNetns(string, *exec.Cmd) error { return errUnsupported }

// WriteSysctl fails.
func WriteSysctl(Netns, string, string) error { return errUnsupported }

// DeleteNetns fails if there is anything to delete.
func DeleteNetns(_ context.Context, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	return errUnsupported
}

// There are no namespaces to list.
func netnsNames(context.Context) ([]string, error) { return nil, nil }
