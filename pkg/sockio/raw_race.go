//go:build race

package sockio

import (
	"syscall"

	"golang.org/x/sys/unix"
	"unsafe"
)

// Under the race detector the data path's system calls go through the
// syscall package, whose calls tell the detector that bytes written to a
// descriptor happen before the same bytes read from one. Raw system calls
// would hide that order from it, and it would report races the sockets
// rule out.

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if errno, ok := err.(syscall.Errno); ok {
		return errno
	}
	return syscall.EIO
}

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := syscall.Read(int(fd), p)
		if err != syscall.EINTR {
			return max(n, 0), errnoOf(err)
		}
	}
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := syscall.Write(int(fd), p)
		if err != syscall.EINTR {
			return max(n, 0), errnoOf(err)
		}
	}
}

// sysWritev writes the first buffer only: the syscall package has no
// writev, and the callers loop.
func sysWritev(fd uintptr, iov []unix.Iovec) (int, syscall.Errno) {
	p := unsafe.Slice(iov[0].Base, iov[0].Len)
	return sysWrite(fd, p)
}

func sysPeek(fd uintptr) syscall.Errno {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != syscall.EINTR {
			return errnoOf(err)
		}
	}
}

func sysInq(fd uintptr) (int, syscall.Errno) {
	v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	return v, errnoOf(err)
}

// rawSyscalls tells tests which calls this build makes.
const rawSyscalls = false
