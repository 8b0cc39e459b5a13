package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on a thread that has joined the network namespace at
// nsPath, leaving every other thread where it was. Sockets fn opens, and
// processes it starts, keep that namespace.
func InNetns(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return fmt.Errorf("open own netns: %w", err)
			}
			defer self.Close()
			target, err := os.Open(nsPath)
			if err != nil {
				return fmt.Errorf("open netns: %w", err)
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter netns %s: %w", nsPath, err)
			}
			fnErr := fn()
			if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
				// Stay locked: the runtime discards a thread whose goroutine
				// exits locked, so no goroutine runs in the wrong namespace.
				return errors.Join(fnErr, fmt.Errorf("leave netns %s: %w", nsPath, err))
			}
			runtime.UnlockOSThread()
			return fnErr
		}()
	}()
	return <-errc
}

// StartInNetns starts cmd inside the network namespace at nsPath: the child
// is forked from a thread that has joined it, and inherits it. It sets two
// fields of cmd.SysProcAttr (creating it if nil):
//   - Setpgid: the child gets its own process group, so a Ctrl-C reaches
//     only the caller, which can then stop its children in order;
//   - Pdeathsig SIGKILL: if the caller dies without cleaning up, so do its
//     children. The signal follows the forking thread, which InNetns hands
//     back to the runtime's pool for the life of the process.
func StartInNetns(nsPath string, cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return InNetns(nsPath, cmd.Start)
}
