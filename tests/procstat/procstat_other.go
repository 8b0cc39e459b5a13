//go:build !linux

package procstat

import (
	"errors"
	"time"
)

var errNotLinux = errors.New("procstat: needs Linux's /proc")

// CPU needs Linux.
func CPU(int) (time.Duration, error) { return 0, errNotLinux }

// ReadMemory needs Linux.
func ReadMemory(int) (Memory, error) { return Memory{}, errNotLinux }

// ResetPeak needs Linux.
func ResetPeak(int) error { return errNotLinux }
