package redirecttest

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/pkg/netns"
)

// handoffPort is where expectHandoff's two listeners meet; nothing else
// in the lab uses it.
const handoffPort = 15099

// expectHandoff checks that a pod with redirection hands the connections
// waiting in a closing listener's accept queue to the other listener of
// its SO_REUSEPORT group, as when an old ztunnel stops listening in the
// pod while a new one already does: every connection is accepted by the
// new listener and carries data.
func expectHandoff(t *testing.T, ns *netns.NS) {
	t.Helper()
	listen := func() *net.TCPListener {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			return setsockoptInt(c, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}}
		var ln net.Listener
		if err := ns.Do(func() (err error) {
			ln, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf("127.0.0.1:%d", handoffPort))
			return err
		}); err != nil {
			t.Fatalf("listen with SO_REUSEPORT: %v", err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.(*net.TCPListener)
	}
	old, next := listen(), listen()

	// The kernel completes each handshake and queues the connection on
	// one of the two listeners; nobody accepts yet.
	const n = 32
	var clients []net.Conn
	for i := range n {
		var c net.Conn
		if err := ns.Do(func() (err error) {
			c, err = net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", handoffPort), 2*time.Second)
			return err
		}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	old.Close()

	accepted := 0
	for accepted < n {
		_ = next.SetDeadline(time.Now().Add(time.Second))
		c, err := next.Accept()
		if err != nil {
			break
		}
		accepted++
		go func() {
			defer c.Close()
			buf := make([]byte, 1)
			if _, err := c.Read(buf); err == nil {
				_, _ = c.Write(buf)
			}
		}()
	}
	if accepted != n {
		t.Fatalf("the new listener accepted %d of %d connections once the old one closed: the old one's queue was reset (net.ipv4.tcp_migrate_req not set?)", accepted, n)
	}
	for i, c := range clients {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := []byte{byte(i)}
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("connection %d: write: %v", i, err)
		}
		if _, err := c.Read(buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("connection %d: no echo after the handoff: %v", i, err)
		}
	}
}
