package bench

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// lockPreciseThread locks the calling goroutine to its thread and sets the
// thread's timer slack to 1 ns (the default 50 µs would blur the schedule).
// The caller must not unlock it.
func lockPreciseThread() error {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set timer slack: %w", err)
	}
	return nil
}

// sleepUntil blocks the thread in nanosleep until t. Signals (the runtime
// preempts with them) cut a sleep short; the loop sleeps again.
func sleepUntil(t time.Time) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		ts := unix.NsecToTimespec(d.Nanoseconds())
		_ = unix.Nanosleep(&ts, nil)
	}
}
