//go:build !race

package sockio

import (
	"syscall"

	"golang.org/x/sys/unix"
	"unsafe"
)

// The data path's system calls, made without the runtime's system-call
// entry (see Sock). Each passes MSG_DONTWAIT, so it never blocks, even on
// a socket something has put in blocking mode (os.File.Fd does): blocking
// while keeping its P would stall the runtime. MSG_NOSIGNAL keeps a write
// to a reset connection an EPIPE. Errors are named after the calls
// net.Conn makes (read, write, writev), as its errors are. The race
// detector's build uses raw_race.go instead.

const sendFlags = syscall.MSG_DONTWAIT | syscall.MSG_NOSIGNAL

func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), syscall.MSG_DONTWAIT, 0, 0)
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), sendFlags, 0, 0)
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

func sysWritev(fd uintptr, iov []unix.Iovec) (int, syscall.Errno) {
	msg := unix.Msghdr{Iov: &iov[0]}
	msg.SetIovlen(len(iov))
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), sendFlags)
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

// sysInq returns how many received bytes the socket holds unread.
func sysInq(fd uintptr) (int, syscall.Errno) {
	var v int32
	_, _, errno := syscall.RawSyscall(syscall.SYS_IOCTL, fd, unix.SIOCINQ, uintptr(unsafe.Pointer(&v)))
	return int(v), errno
}

// rawSyscalls tells tests which calls this build makes.
const rawSyscalls = true
