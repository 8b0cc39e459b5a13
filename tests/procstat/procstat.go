// Package procstat reads a process's CPU time and memory from /proc, for
// the benchmarks' reports.
package procstat

import (
	"fmt"
	"strconv"
	"strings"
)

// Memory is a process's resident set now and at its peak, in bytes.
type Memory struct {
	RSS, HWM int64
}

// parseStatus reads VmRSS and VmHWM from the text of /proc/<pid>/status.
func parseStatus(s string) (Memory, error) {
	var m Memory
	var seen int
	for line := range strings.SplitSeq(s, "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("status %s: %w", name, err)
		}
		if name == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
		seen++
	}
	if seen != 2 {
		return Memory{}, fmt.Errorf("status: VmRSS or VmHWM missing")
	}
	return m, nil
}
