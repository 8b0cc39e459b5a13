package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
)

// Stale lists the namespaces that topologies of killed runs left behind:
// those named "<base>-<pid>-<name>" (a PidPrefix(base) prefix) whose
// process no longer exists. DeleteNetns removes them.
func Stale(ctx context.Context, base string) ([]string, error) {
	re, err := regexp.Compile(`^` + regexp.QuoteMeta(base) + `-(\d+)-[a-z0-9]+$`)
	if err != nil {
		return nil, err
	}
	names, err := netnsNames(ctx)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, n := range names {
		if DeadOwner(re, n) {
			stale = append(stale, n)
		}
	}
	return stale, nil
}

// DeadOwner tells whether name matches re, whose first group is a pid, and
// that process is gone. This process never counts as gone.
func DeadOwner(re *regexp.Regexp, name string) bool {
	m := re.FindStringSubmatch(name)
	if len(m) < 2 {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid == os.Getpid() {
		return false
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}
