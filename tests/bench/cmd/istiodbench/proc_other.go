//go:build !linux

package main

import (
	"os"
	"syscall"
)

var terminate = os.Interrupt

func childAttrs() *syscall.SysProcAttr { return nil }

func loadAverage() string { return "unknown" }
