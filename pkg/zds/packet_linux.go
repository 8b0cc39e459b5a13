package zds

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Room for more fds than any packet may carry, so that surplus ones arrive
// (and get closed) instead of being cut off; the kernel closes any beyond.
const maxFDs = 8

var oobSize = unix.CmsgSpace(maxFDs * 4)

// readPacket reads one packet and the fds that came with it. Every fd the
// kernel installed is returned as a file, or closed if the read fails.
func readPacket(uc *net.UnixConn) ([]byte, []*os.File, error) {
	buf := make([]byte, maxPacket)
	oob := make([]byte, oobSize)
	// Go reads with MSG_CMSG_CLOEXEC, so received fds never leak into a
	// child process either.
	n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
	fds, perr := parseRights(oob[:oobn])
	files := make([]*os.File, 0, len(fds))
	for _, fd := range fds {
		files = append(files, os.NewFile(uintptr(fd), "zds-fd"))
	}
	switch {
	case err != nil:
		// Includes io.EOF for a zero-length packet, which may carry fds.
		closeFiles(files)
		return nil, nil, err
	case perr != nil:
		closeFiles(files)
		return nil, nil, invalidf("control message: %v", perr)
	case flags&unix.MSG_TRUNC != 0:
		closeFiles(files)
		return nil, nil, invalidf("packet longer than %d bytes", maxPacket)
	case flags&unix.MSG_CTRUNC != 0:
		closeFiles(files)
		return nil, nil, invalidf("control data truncated: more than %d fds", maxFDs)
	}
	return buf[:n], files, nil
}

// parseRights returns the fds of every SCM_RIGHTS message in oob. On a
// malformed message it still returns the fds found before it, for the
// caller to close. It never trusts lengths: oob may be anything.
func parseRights(oob []byte) ([]int, error) {
	var fds []int
	for len(oob) > 0 {
		// ParseOneSocketControlMessage reads a whole header without
		// checking that oob holds one.
		if len(oob) < unix.SizeofCmsghdr {
			return fds, fmt.Errorf("%d trailing bytes", len(oob))
		}
		hdr, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return fds, err
		}
		if hdr.Level == unix.SOL_SOCKET && hdr.Type == unix.SCM_RIGHTS {
			if len(data)%4 != 0 {
				return fds, fmt.Errorf("SCM_RIGHTS of %d bytes", len(data))
			}
			for i := 0; i < len(data); i += 4 {
				fd := int(int32(binary.NativeEndian.Uint32(data[i:])))
				if fd < 0 {
					return fds, fmt.Errorf("fd %d", fd)
				}
				fds = append(fds, fd)
			}
		}
		oob = rest
	}
	return fds, nil
}

// writePacket sends b as one packet, with fd attached if not nil.
func writePacket(uc *net.UnixConn, b []byte, fd *os.File) error {
	if fd == nil {
		return sendmsg(uc, b, nil)
	}
	// Control keeps fd open while the kernel takes its reference; unlike
	// Fd, it leaves the file's mode alone.
	rc, err := fd.SyscallConn()
	if err != nil {
		return fmt.Errorf("netns fd: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = sendmsg(uc, b, unix.UnixRights(int(fd)))
	}); err != nil {
		return fmt.Errorf("netns fd: %w", err)
	}
	return serr
}

func sendmsg(uc *net.UnixConn, b, oob []byte) error {
	n, _, err := uc.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(b))
	}
	return nil
}
