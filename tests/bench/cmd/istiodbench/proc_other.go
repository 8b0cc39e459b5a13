//go:build !linux

package main

import (
	"errors"
	"os"
	"syscall"
	"time"
)

var terminate = os.Interrupt

func childAttrs() *syscall.SysProcAttr { return nil }

type memory struct {
	RSS, HWM int64
}

var errNotLinux = errors.New("istiod's memory and CPU are read from /proc, which needs Linux")

func readMemory(int) (memory, error) { return memory{}, errNotLinux }

func readCPU(int) (time.Duration, error) { return 0, errNotLinux }

func loadAverage() string { return "unknown" }
