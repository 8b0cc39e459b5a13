package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/ambient-mesh/mesh/tests/netlab"
)

// Stale is what runs killed before their teardown left behind: their
// namespaces and CA directories. Their processes are gone already, since
// children die with the harness.
type Stale struct {
	Namespaces []string
	Dirs       []string
}

// Empty tells whether nothing was left behind.
func (s Stale) Empty() bool { return len(s.Namespaces) == 0 && len(s.Dirs) == 0 }

var stalePKI = regexp.MustCompile(`^nb-(\d+)-(pki|ztunnel)-\d+$`)

// FindStale lists what earlier runs left behind: names in our format
// whose process no longer exists.
func FindStale(ctx context.Context) (Stale, error) {
	var s Stale
	var err error
	if s.Namespaces, err = netlab.Stale(ctx, prefixBase); err != nil {
		return s, err
	}
	ents, err := os.ReadDir(os.TempDir())
	if err != nil {
		return s, fmt.Errorf("list %s: %w", os.TempDir(), err)
	}
	for _, e := range ents {
		if e.IsDir() && netlab.DeadOwner(stalePKI, e.Name()) {
			s.Dirs = append(s.Dirs, filepath.Join(os.TempDir(), e.Name()))
		}
	}
	return s, nil
}

// Remove deletes what s lists.
func (s Stale) Remove(ctx context.Context) error {
	errs := []error{netlab.DeleteNetns(ctx, s.Namespaces...)}
	for _, d := range s.Dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
