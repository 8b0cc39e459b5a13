package zds

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
)

// DefaultSocketPath is where the node agent listens and ztunnel connects.
const DefaultSocketPath = "/var/run/ztunnel/ztunnel.sock"

// Listen opens the agent's socket at path, replacing a stale socket left by
// an earlier run. It refuses to remove anything that is not a socket.
func Listen(path string) (*net.UnixListener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode()&fs.ModeSocket == 0:
		return nil, fmt.Errorf("listen zds %s: exists and is not a socket", path)
	case err == nil:
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen zds %s: remove stale socket: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("listen zds %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listen zds %s: %w", path, err)
	}
	return ln, nil
}
