package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

var (
	staleNetns = regexp.MustCompile(`^nb-(\d+)-(host|node1|node2|client|server)$`)
	stalePKI   = regexp.MustCompile(`^nb-(\d+)-pki-\d+$`)
)

// FindStale lists what earlier runs left behind: names in our format
// whose process no longer exists.
func FindStale(ctx context.Context) (Stale, error) {
	var s Stale
	names, err := netnsNames(ctx)
	if err != nil {
		return s, err
	}
	for _, n := range names {
		if deadOwner(staleNetns, n) {
			s.Namespaces = append(s.Namespaces, n)
		}
	}
	ents, err := os.ReadDir(os.TempDir())
	if err != nil {
		return s, fmt.Errorf("list %s: %w", os.TempDir(), err)
	}
	for _, e := range ents {
		if e.IsDir() && deadOwner(stalePKI, e.Name()) {
			s.Dirs = append(s.Dirs, filepath.Join(os.TempDir(), e.Name()))
		}
	}
	return s, nil
}

// Remove deletes what s lists.
func (s Stale) Remove(ctx context.Context) error {
	var errs []error
	for _, n := range s.Namespaces {
		errs = append(errs, deleteNetns(ctx, n))
	}
	for _, d := range s.Dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// deadOwner tells whether name matches re and the pid it embeds is gone.
func deadOwner(re *regexp.Regexp, name string) bool {
	m := re.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid == os.Getpid() {
		return false
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}
