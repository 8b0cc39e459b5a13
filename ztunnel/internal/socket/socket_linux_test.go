package socket

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// namedNetns makes a network namespace with a unique name, removed when the
// test ends.
func namedNetns(t *testing.T, role string) (string, *netns.NS) {
	t.Helper()
	name := fmt.Sprintf("zt%d-%s", os.Getpid()%100000, role)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name, ns
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

func listenIn(t *testing.T, ns *netns.NS, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestRedirectedOutboundKeepsDestinationAndSource is the in-pod outbound
// path in miniature: the pod's NAT rule sends its connection to ztunnel's
// listener inside the pod; ztunnel reads where it was going and dials there
// itself from the pod's namespace with its mark, which the rule lets pass,
// so the server sees the pod's own address.
func TestRedirectedOutboundKeepsDestinationAndSource(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables")
	}
	pod, podNS := namedNetns(t, "pod")
	srv, srvNS := namedNetns(t, "srv")
	run(t, "ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", srv)
	run(t, "ip", "-n", pod, "addr", "add", "10.77.0.2/24", "dev", "eth0")
	run(t, "ip", "-n", srv, "addr", "add", "10.77.0.3/24", "dev", "eth0")
	run(t, "ip", "-n", pod, "link", "set", "eth0", "up")
	run(t, "ip", "-n", srv, "link", "set", "eth0", "up")
	run(t, "ip", "netns", "exec", pod, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "!", "-d", "127.0.0.1/32",
		"-m", "mark", "!", "--mark", fmt.Sprintf("%#x/0xfff", Mark), "-j", "REDIRECT", "--to-ports", "15001")

	// The server says who it sees, then echoes.
	server := listenIn(t, srvNS, "10.77.0.3:8080")
	go func() {
		for {
			c, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", c.RemoteAddr())
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = c.Write(buf[:n])
			}()
		}
	}()

	capture := listenIn(t, podNS, ":15001")
	type accepted struct {
		dst netip.AddrPort
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		c, err := capture.Accept()
		if err != nil {
			got <- accepted{err: err}
			return
		}
		defer c.Close()
		dst, err := OriginalDst(c.(*net.TCPConn))
		got <- accepted{dst, err}
		if err != nil {
			return
		}
		// Upstream from the pod's namespace, marked.
		var up net.Conn
		err = podNS.Do(func() (err error) {
			d := net.Dialer{Control: MarkControl, Timeout: 5 * time.Second}
			up, err = d.Dial("tcp", dst.String())
			return err
		})
		if err != nil {
			return
		}
		defer up.Close()
		go func() { buf := make([]byte, 64); n, _ := c.Read(buf); _, _ = up.Write(buf[:n]) }()
		buf := make([]byte, 256)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				_, _ = c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()

	// The app in the pod dials the server as if nothing were in between.
	var app net.Conn
	if err := podNS.Do(func() (err error) {
		app, err = net.DialTimeout("tcp", "10.77.0.3:8080", 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	_ = app.SetDeadline(time.Now().Add(10 * time.Second))

	a := <-got
	if a.err != nil {
		t.Fatalf("capture: %v", a.err)
	}
	if want := netip.MustParseAddrPort("10.77.0.3:8080"); a.dst != want {
		t.Fatalf("original destination %s, want %s", a.dst, want)
	}
	r := bufio.NewReader(app)
	seen, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(strings.TrimSpace(seen)); host != "10.77.0.2" {
		t.Fatalf("server saw the pod as %q, want 10.77.0.2", seen)
	}
	if _, err := app.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 4)
	if _, err := r.Read(echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo %q, %v", echo, err)
	}
}

// An unredirected connection reports its own local address.
func TestOriginalDstWithoutNAT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst, err := OriginalDst(c.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	if dst.String() != ln.Addr().String() {
		t.Fatalf("original destination %s, want %s", dst, ln.Addr())
	}
}

// TestInPodListenersShareThePortDuringAnUpgrade is a rolling update that
// surges: a second ztunnel listens on the same port in the same pod while
// the first still does, and once the first closes its listener every new
// connection reaches the second.
func TestInPodListenersShareThePortDuringAnUpgrade(t *testing.T) {
	_, ns := namedNetns(t, "reuse")
	listen := func() net.Listener {
		var ln net.Listener
		err := ns.Do(func() (err error) {
			lc := net.ListenConfig{Control: InPodListenerControl(true)}
			ln, err = lc.Listen(t.Context(), "tcp4", "0.0.0.0:15001")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	old := listen()
	upgraded := listen() // fails with EADDRINUSE without SO_REUSEPORT
	old.Close()
	for i := range 5 {
		var c net.Conn
		if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp4", "127.0.0.1:15001", time.Second); return err }); err != nil {
			t.Fatalf("connection %d after the old listener closed: %v", i, err)
		}
		c.Close()
		_ = upgraded.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
		a, err := upgraded.Accept()
		if err != nil {
			t.Fatalf("connection %d not accepted by the new listener: %v", i, err)
		}
		a.Close()
	}
}
