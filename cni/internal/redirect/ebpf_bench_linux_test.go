package redirect_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/cni/internal/redirect"
	"github.com/ambient-mesh/mesh/pkg/netns"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

// BenchmarkRedirection measures what the redirection costs, every figure in
// the same run so the ratios compare like with like: connection setup and
// streaming through the eBPF mode and the nftables mode to a stand-in
// ztunnel listener in the pod, against the same listener reached directly
// on 127.0.0.1; and ztunnel's own (marked) connections to a peer pod, which
// both modes let through, against no redirection at all. It prints a table
// of ns/op with each figure's ratio to its baseline.
func BenchmarkRedirection(b *testing.B) {
	redirect.NeedEBPF(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Namespaces of runs killed before their cleanup.
	if stale, err := netlab.Stale(ctx, "redirbench"); err == nil && len(stale) > 0 {
		_ = netlab.DeleteNetns(ctx, stale...)
	}
	topo, err := netlab.New(ctx, netlab.PidPrefix("redirbench"), []netlab.PodSpec{{Name: "app", Node: 1}, {Name: "peer", Node: 1}})
	if err != nil {
		b.Fatal(err)
	}
	defer topo.Close()
	app, peer := topo.Pod("app"), topo.Pod("peer")
	appNS, err := netns.Open(app.NS.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer appNS.Close()
	peerNS, err := netns.Open(peer.NS.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer peerNS.Close()

	// The stand-in ztunnel echoes; so does the peer.
	for _, s := range []struct {
		ns          *netns.NS
		port        int
		transparent bool
	}{{appNS, redirect.OutboundPort, true}, {peerNS, 9000, false}} {
		ln := benchListen(b, s.ns, s.port, s.transparent)
		defer ln.Close()
		go echoAll(ln)
	}
	remote := netip.AddrPortFrom(peer.IP, 9000)
	local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), redirect.OutboundPort)

	modes := []redirect.Mode{redirect.NewEBPF(nil), redirect.NFTables{}}
	type row struct {
		name     string
		mode     redirect.Mode // applied while measuring, or nil
		dst      netip.AddrPort
		marked   bool
		baseline string
	}
	rows := []row{
		{"connect/direct-127.0.0.1", nil, local, false, ""},
		{"connect/ebpf-redirected", modes[0], remote, false, "connect/direct-127.0.0.1"},
		{"connect/nftables-redirected", modes[1], remote, false, "connect/direct-127.0.0.1"},
		{"connect/marked-no-redirection", nil, remote, true, ""},
		{"connect/marked-ebpf", modes[0], remote, true, "connect/marked-no-redirection"},
		{"connect/marked-nftables", modes[1], remote, true, "connect/marked-no-redirection"},
		{"stream/direct-127.0.0.1", nil, local, false, ""},
		{"stream/ebpf-redirected", modes[0], remote, false, "stream/direct-127.0.0.1"},
		{"stream/nftables-redirected", modes[1], remote, false, "stream/direct-127.0.0.1"},
		{"stream/marked-no-redirection", nil, remote, true, ""},
		{"stream/marked-ebpf", modes[0], remote, true, "stream/marked-no-redirection"},
		{"stream/marked-nftables", modes[1], remote, true, "stream/marked-no-redirection"},
	}
	// Sub-benchmarks, not testing.Benchmark, which would wait for the
	// lock this benchmark holds; each records its last, final, figure.
	results := map[string]time.Duration{}
	for _, r := range rows {
		for _, m := range modes {
			if err := m.Remove(app.NS.Path()); err != nil {
				b.Fatal(err)
			}
		}
		if r.mode != nil {
			if err := r.mode.Apply(app.NS.Path(), redirect.Config{PodIPs: []netip.Addr{app.IP}}); err != nil {
				b.Fatalf("apply %s: %v", r.mode.Name(), err)
			}
		}
		b.Run(r.name, func(b *testing.B) {
			if strings.HasPrefix(r.name, "connect/") {
				benchConnect(b, appNS, r.dst, r.marked)
			} else {
				benchStream(b, appNS, r.dst, r.marked)
			}
			results[r.name] = b.Elapsed() / time.Duration(b.N)
		})
	}
	for _, m := range modes {
		_ = m.Remove(app.NS.Path())
	}
	fmt.Printf("%-32s %12s %10s\n", "redirection", "ns/op", "vs base")
	for _, r := range rows {
		res := results[r.name]
		ratio := "-"
		if base, ok := results[r.baseline]; ok && base > 0 {
			x := float64(res) / float64(base)
			ratio = fmt.Sprintf("%.2fx", x)
		}
		fmt.Printf("%-32s %12d %10s\n", r.name, res.Nanoseconds(), ratio)
	}
}

func benchListen(b *testing.B, ns *netns.NS, port int, transparent bool) net.Listener {
	var ln net.Listener
	err := ns.Do(func() (err error) {
		lc := net.ListenConfig{}
		if transparent {
			lc.Control = sockopt(unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
		ln, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

func sockopt(level, opt, v int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
			return err
		}
		return serr
	}
}

func echoAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

func dial(dst netip.AddrPort, marked bool) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if marked {
		d.Control = sockopt(unix.SOL_SOCKET, unix.SO_MARK, redirect.ZtunnelMark)
	}
	c, err := d.Dial("tcp4", dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// benchConnect opens a connection, exchanges one byte and resets it (no
// TIME_WAIT, so ephemeral ports last). It uses blocking system calls on one
// thread inside the pod's namespace, so that what it measures is the
// kernel's work, not the Go scheduler handing a locked thread around.
func benchConnect(b *testing.B, ns *netns.NS, dst netip.AddrPort, marked bool) {
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	b.ResetTimer()
	err := ns.Do(func() error {
		buf := []byte{1}
		for range b.N {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = connectOnce(fd, sa, marked, buf)
			_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func connectOnce(fd int, sa unix.Sockaddr, marked bool, buf []byte) error {
	if marked {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, redirect.ZtunnelMark); err != nil {
			return err
		}
	}
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := unix.Write(fd, buf); err != nil {
		return err
	}
	if n, err := unix.Read(fd, buf); err != nil || n != 1 {
		return fmt.Errorf("read echo: %d, %w", n, err)
	}
	return nil
}

// benchStream sends 64 KiB per op through one connection and reads the
// echo back.
func benchStream(b *testing.B, ns *netns.NS, dst netip.AddrPort, marked bool) {
	var c *net.TCPConn
	err := ns.Do(func() (err error) {
		c, err = dial(dst, marked)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	out := make([]byte, 64<<10)
	in := make([]byte, len(out))
	b.SetBytes(int64(len(out)))
	errc := make(chan error, 1)
	b.ResetTimer()
	for range b.N {
		go func() {
			_, err := c.Write(out)
			errc <- err
		}()
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) {
			b.Fatal(err)
		}
	}
}
