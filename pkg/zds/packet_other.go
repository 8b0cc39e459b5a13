//go:build !linux

package zds

import (
	"errors"
	"net"
	"os"
)

// ZDS passes network namespaces, which only Linux has.

func readPacket(*net.UnixConn) ([]byte, []*os.File, error) { return nil, nil, errors.ErrUnsupported }

func writePacket(*net.UnixConn, []byte, *os.File) error { return errors.ErrUnsupported }
