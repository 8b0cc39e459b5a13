package netns

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSocketsStayInTheNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	host, err := Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	a, _ := ns.Inode()
	b, _ := host.Inode()
	if a == 0 || a == b {
		t.Fatalf("new namespace inode %d, host %d", a, b)
	}
	// A socket made in Do belongs to the new namespace; one made outside
	// belongs to the host's, so the calling thread was never moved.
	var inside net.Listener
	if err := ns.Do(func() (err error) { inside, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	if got := socketNS(t, inside); got != a {
		t.Errorf("socket made in Do is in namespace %d, want %d", got, a)
	}
	if got := socketNS(t, outside); got != b {
		t.Errorf("socket made outside Do is in namespace %d, want the host's %d", got, b)
	}
}

// socketNS returns the inode of the network namespace a socket lives in.
func socketNS(t *testing.T, ln net.Listener) uint64 {
	t.Helper()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	var serr error
	_ = raw.Control(func(fd uintptr) {
		nsfd, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
		if err != nil {
			serr = err
			return
		}
		defer unix.Close(nsfd)
		var st unix.Stat_t
		serr = unix.Fstat(nsfd, &st)
		ino = st.Ino
	})
	if serr != nil {
		t.Fatal(serr)
	}
	return ino
}

func TestFromFileRefusesOtherFiles(t *testing.T) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromFile(f); err == nil {
		t.Fatal("accepted a regular file as a namespace")
	}
	mnt, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		t.Skip(err)
	}
	if _, err := FromFile(mnt); err == nil {
		t.Fatal("accepted a mount namespace as a network namespace")
	}
}
