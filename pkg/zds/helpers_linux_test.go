package zds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newNetns returns a fresh network namespace, closed at cleanup. The
// namespace is made on a throwaway OS thread: the goroutine exits still
// locked, so the runtime retires the thread instead of reusing it.
func newNetns(t *testing.T) *os.File {
	t.Helper()
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		path := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		var host unix.Stat_t
		if err := unix.Stat(path, &host); err != nil {
			ch <- result{err: err}
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		f, err := os.Open(path)
		if err == nil {
			var st unix.Stat_t
			if err = unix.Fstat(int(f.Fd()), &st); err == nil && st.Ino == host.Ino && st.Dev == host.Dev {
				f.Close()
				err = errors.New("still in the original netns")
			}
		}
		ch <- result{f, err}
	}()
	r := <-ch
	if errors.Is(r.err, unix.EPERM) {
		t.Skip("creating a network namespace needs CAP_SYS_ADMIN")
	}
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	t.Cleanup(func() { r.f.Close() })
	return r.f
}

// inode identifies the namespace (or any file) behind f.
func inode(t *testing.T, f *os.File) [2]uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatalf("fstat: %v", err)
	}
	return [2]uint64{st.Dev, st.Ino}
}

// openFDs counts this process's open fds.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list fds: %v", err)
	}
	return len(ents)
}

// checkFDs fails the test if the process holds a different number of fds
// when the returned func runs than it did now.
func checkFDs(t *testing.T) func() {
	t.Helper()
	before := openFDs(t)
	return func() {
		t.Helper()
		// Closing is synchronous, but give straggling goroutines a moment.
		for range 50 {
			if openFDs(t) == before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("fd leak: %d open before, %d after", before, openFDs(t))
	}
}

// socketDir is a short private directory: socket paths are limited to 108
// bytes, too little for some t.TempDir paths.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "zds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// pair returns both ends of a unixpacket connection made through a socket
// file, closed at cleanup.
func pair(t testing.TB) (agent, ztunnel *net.UnixConn) {
	t.Helper()
	ln, err := Listen(filepath.Join(socketDir(t), "zds.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); c.Close() })
	return a, c.uc
}

// devNull opens n fds to attach to packets.
func devNull(t testing.TB, n int) []*os.File {
	t.Helper()
	var fs []*os.File
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	return fs
}

// sendRaw writes payload with files attached, bypassing Conn's checks, as a
// hostile or broken peer would; it then closes its copies of the files.
func sendRaw(t testing.TB, uc *net.UnixConn, payload []byte, files []*os.File) error {
	t.Helper()
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	_, _, err := uc.WriteMsgUnix(payload, oob, nil)
	closeFiles(files)
	return err
}

// sendEmpty sends a zero-length packet carrying f. Go's own send functions
// add a byte to such a packet, so this goes to sendmsg(2) directly.
func sendEmpty(t testing.TB, uc *net.UnixConn, f *os.File) {
	t.Helper()
	defer f.Close()
	oob := unix.UnixRights(int(f.Fd()))
	msg := unix.Msghdr{Control: &oob[0]}
	msg.SetControllen(len(oob))
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var errno syscall.Errno
	if err := rc.Write(func(fd uintptr) bool {
		_, _, errno = unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
		return errno != unix.EAGAIN
	}); err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatalf("sendmsg: %v", errno)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
