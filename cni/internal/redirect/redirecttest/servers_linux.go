package redirecttest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/pkg/netns"
)

// servers owns the lab's listeners and every connection they accepted.
// Each TCP connection is greeted with one line, "<server> <original
// destination> <client>", and then echoed, so a client learns where it
// landed and can later check that the connection still carries data. Each
// UDP datagram is answered with the same kind of line.
type servers struct {
	mu        sync.Mutex
	closed    bool
	listeners []io.Closer
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

// ztunnelName is how a stand-in ztunnel listener names itself.
func ztunnelName(port int) string { return fmt.Sprintf("ztunnel:%d", port) }

// listenTCP opens a TCP listener on 0.0.0.0:port inside ns. transparent
// sets IP_TRANSPARENT, as ztunnel does on its capture listeners, so a mode
// may also hand it connections addressed to other hosts.
func (s *servers) listenTCP(ns *netns.NS, port int, name string, transparent bool) error {
	lc := net.ListenConfig{}
	if transparent {
		lc.Control = transparentControl
	}
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		return fmt.Errorf("listen %s on tcp %d: %w", name, port, err)
	}
	if !s.track(ln) {
		return errors.New("servers closed")
	}
	s.wg.Go(func() { s.accept(ln.(*net.TCPListener), name) })
	return nil
}

func (s *servers) accept(ln *net.TCPListener, name string) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return // closed
		}
		if !s.trackConn(c) {
			c.Close()
			return
		}
		s.wg.Go(func() {
			defer s.untrackConn(c)
			orig := originalDst(c)
			fmt.Fprintf(c, "%s %s %s\n", name, orig, addrPort(c.RemoteAddr()))
			_, _ = io.Copy(c, c)
		})
	}
}

// originalDst recovers the destination the client asked for the way
// ztunnel does: SO_ORIGINAL_DST, which a NAT redirect answers, else the
// accepted socket's own local address, which is the original destination
// when a mode assigns the connection to the listener transparently.
func originalDst(c *net.TCPConn) netip.AddrPort {
	raw, err := c.SyscallConn()
	if err == nil {
		var orig netip.AddrPort
		var serr error
		err = raw.Control(func(fd uintptr) {
			var m *unix.IPv6Mreq
			m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if serr != nil {
				return
			}
			// The option fills a struct sockaddr_in: family, port (network
			// order), address.
			a := m.Multiaddr
			orig = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), uint16(a[2])<<8|uint16(a[3]))
		})
		if err == nil && serr == nil {
			return orig
		}
	}
	return addrPort(c.LocalAddr())
}

// listenUDP opens a UDP socket on 0.0.0.0:port inside ns that answers each
// datagram from the address it was sent to, so that the client's
// connected socket (and, after a NAT redirect, conntrack) accepts the
// answer. transparent is as for listenTCP; it also lets the answer come
// from an address the namespace does not own.
func (s *servers) listenUDP(ns *netns.NS, port int, name string, transparent bool) error {
	lc := net.ListenConfig{}
	if transparent {
		lc.Control = transparentControl
	}
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		return fmt.Errorf("listen %s on udp %d: %w", name, port, err)
	}
	if !s.track(pc) {
		return errors.New("servers closed")
	}
	p := ipv4.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return fmt.Errorf("%s: ask for IP_PKTINFO: %w", name, err)
	}
	s.wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			_, cm, src, err := p.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			if cm == nil || cm.Dst == nil {
				continue
			}
			dst, _ := netip.AddrFromSlice(cm.Dst)
			reply := fmt.Sprintf("%s %s %s\n", name, netip.AddrPortFrom(dst.Unmap(), uint16(port)), addrPort(src))
			_, _ = p.WriteTo([]byte(reply), &ipv4.ControlMessage{Src: cm.Dst}, src)
		}
	})
	return nil
}

func (s *servers) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.listeners = append(s.listeners, c)
	return true
}

func (s *servers) trackConn(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *servers) untrackConn(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close closes the listeners and open connections and waits for every
// goroutine the servers started.
func (s *servers) Close() {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// landing is what a server said about a connection or datagram.
type landing struct {
	Server string
	Orig   netip.AddrPort // original destination as the server recovered it
	Client netip.AddrPort // source address as the server saw it
}

func (l landing) String() string {
	return fmt.Sprintf("%s (orig %s, from %s)", l.Server, l.Orig, l.Client)
}

func parseLanding(line string) (landing, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return landing{}, fmt.Errorf("bad greeting %q", line)
	}
	orig, err := netip.ParseAddrPort(f[1])
	if err != nil {
		return landing{}, fmt.Errorf("bad greeting %q: %w", line, err)
	}
	client, err := netip.ParseAddrPort(f[2])
	if err != nil {
		return landing{}, fmt.Errorf("bad greeting %q: %w", line, err)
	}
	return landing{Server: f[0], Orig: orig, Client: client}, nil
}

// conn is a client connection whose greeting has been read.
type conn struct {
	net.Conn
	r *bufio.Reader
}

func readLanding(c net.Conn, r *bufio.Reader) (landing, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return landing{}, fmt.Errorf("read greeting from %s: %w", c.RemoteAddr(), err)
	}
	return parseLanding(line)
}

// echo checks that the connection still carries data both ways.
func (c *conn) echo(msg string) error {
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", got, msg+"\n")
	}
	return nil
}

// transparentControl sets IP_TRANSPARENT, as ztunnel's capture listeners do.
func transparentControl(_, _ string, c syscall.RawConn) error {
	return setsockoptInt(c, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
}

// markControl marks a socket as ztunnel's own.
func markControl(_, _ string, c syscall.RawConn) error {
	return setsockoptInt(c, unix.SOL_SOCKET, unix.SO_MARK, redirect.ZtunnelMark)
}

func setsockoptInt(c syscall.RawConn, level, opt, v int) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
		return err
	}
	return serr
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
