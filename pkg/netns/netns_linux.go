package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// NS is an open handle on a network namespace.
type NS struct {
	f *os.File
}

// Open opens the namespace bound at path, e.g. /var/run/netns/<name> or
// /proc/<pid>/ns/net.
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return FromFile(f)
}

// FromFile takes ownership of an open namespace file, such as the one the
// node agent passes over ZDS. It refuses a file that is not a network
// namespace.
func FromFile(f *os.File) (*NS, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat netns %s: %w", f.Name(), err)
	}
	if st.Type != unix.NSFS_MAGIC {
		f.Close()
		return nil, fmt.Errorf("%s is not a namespace file", f.Name())
	}
	// An nsfs file may be another kind of namespace: setns with the network
	// type checks that.
	ns := &NS{f: f}
	if err := ns.Do(func() error { return nil }); err != nil {
		f.Close()
		return nil, err
	}
	return ns, nil
}

// New creates a network namespace (with only a down loopback). It lives as
// long as the handle, or any socket created in it, is open.
func New() (*NS, error) {
	var ns *NS
	err := onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return err
		}
		ns = &NS{f: f}
		return nil
	})
	return ns, err
}

// Fd returns the namespace file descriptor, valid until Close.
func (ns *NS) Fd() uintptr { return ns.f.Fd() }

// Inode identifies the namespace: two handles with the same inode name the
// same namespace.
func (ns *NS) Inode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns.f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Close releases the handle.
func (ns *NS) Close() error { return ns.f.Close() }

// Do runs fn on an OS thread that is inside the namespace. Sockets fn
// creates stay in the namespace after Do returns; fn must not start
// goroutines that expect to inherit it.
func (ns *NS) Do(fn func() error) error {
	return onFreshThread(func() error {
		if err := unix.Setns(int(ns.f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return fn()
	})
}

// onFreshThread runs fn on a locked OS thread and puts the thread back in
// its own network namespace afterwards. If that fails the thread stays
// locked, and the runtime retires it with the goroutine, so a thread in the
// wrong namespace never runs other goroutines.
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("panic in netns: %v", r)
			}
		}()
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
