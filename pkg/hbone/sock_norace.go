//go:build !race

package hbone

import (
	"syscall"
	"unsafe"
)

// The data path's system calls, made without the runtime's system-call
// entry (see sock). Each is on a non-blocking socket, so it never waits.
// The race detector's build uses sock_race.go instead.

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

func sysWritev(fd uintptr, iov []syscall.Iovec) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

// sysPeek asks whether the socket has a byte to read, an end or an error,
// taking nothing from it.
func sysPeek(fd uintptr) syscall.Errno {
	var b [1]byte
	for {
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if errno != syscall.EINTR {
			return errno
		}
	}
}
