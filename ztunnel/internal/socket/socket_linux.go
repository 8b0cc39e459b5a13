package socket

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mark is set (SO_MARK) on every socket ztunnel opens from a pod's network
// namespace; the pod's redirection rules let marked traffic through, which
// is what keeps ztunnel from capturing itself.
const Mark = 0x539

// soOriginalDst is SO_ORIGINAL_DST (and IP6T_SO_ORIGINAL_DST): the address
// a connection was sent to before NAT redirected it.
const soOriginalDst = 80

// OriginalDst returns where the peer of an accepted connection meant to
// go. For a connection redirected by NAT (iptables REDIRECT) that is the
// conntrack entry's original destination; for a connection delivered
// transparently (TPROXY, sk_lookup, bpf_sk_assign) it is the local address.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			var sa unix.RawSockaddrInet4
			size := uint32(unsafe.Sizeof(sa))
			if serr = getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), &size); serr == nil {
				dst = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:]))
			}
			return
		}
		var sa unix.RawSockaddrInet6
		size := uint32(unsafe.Sizeof(sa))
		if serr = getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa), &size); serr == nil {
			dst = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:]))
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if serr == unix.ENOENT {
		// No NAT entry: the connection arrived unchanged.
		return local, nil
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	return dst, nil
}

func getsockopt(fd uintptr, level, name int, val unsafe.Pointer, size *uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(name), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// MarkControl is a net.Dialer/ListenConfig Control function that sets
// Mark on the socket before it connects.
func MarkControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, Mark)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_MARK: %w", serr)
	}
	return nil
}

// TransparentControl is a ListenConfig Control function that sets
// IP_TRANSPARENT, so that a listener in a pod's netns also accepts
// connections steered to it with their original destination intact
// (TPROXY or sk_lookup), not only NAT-redirected ones.
func TransparentControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IP_TRANSPARENT: %w", serr)
	}
	return nil
}

// ReusePortControl is a ListenConfig Control function that sets
// SO_REUSEPORT, so that a second ztunnel on the node (a rolling update
// that surges) can listen in the same pod's namespace while the first one
// drains: the kernel spreads new connections over both until the old
// listener closes.
func ReusePortControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_REUSEPORT: %w", serr)
	}
	return nil
}

// InPodListenerControl is the Control function of ztunnel's listeners in
// a pod's namespace: SO_REUSEPORT always, and IP_TRANSPARENT when the
// listener takes redirected traffic (transparent).
func InPodListenerControl(transparent bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if err := ReusePortControl(network, address, c); err != nil {
			return err
		}
		if transparent {
			return TransparentControl(network, address, c)
		}
		return nil
	}
}
