package main

import (
	"os"
	"strings"
	"syscall"
)

// terminate is how istiod is asked to stop.
var terminate = syscall.SIGTERM

// childAttrs kill istiod if the bench dies without stopping it.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// loadAverage is the first three fields of /proc/loadavg, to tell how busy
// the machine was: other work on it shows in every figure.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
