package redirect

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// tcpMigrateReq is the pod namespace's net.ipv4.tcp_migrate_req. ztunnel's
// listeners in a pod form a SO_REUSEPORT group while a new ztunnel takes
// over from an old one (a rolling update with surge). When the old one
// closes its listeners, the connections the kernel had completed for them
// but the old ztunnel had not accepted yet would be reset; with this set
// they move to the new ztunnel's listener instead. ztunnel cannot set it
// itself: its container sees /proc/sys read-only.
const tcpMigrateReq = "/proc/sys/net/ipv4/tcp_migrate_req"

// prepareHandoff lets a pod's connections survive a ztunnel handover. A
// kernel without the knob (before 5.14) loses only those few queued
// connections at a handover, so its absence is no error.
func prepareHandoff(ns *netns.NS) error {
	// /proc/sys/net shows the namespace of the thread that opens it.
	err := ns.Do(func() error { return os.WriteFile(tcpMigrateReq, []byte("1"), 0o644) })
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set net.ipv4.tcp_migrate_req: %w", err)
	}
	return nil
}
