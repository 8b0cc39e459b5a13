package redirect

import (
	"fmt"
	"strings"
)

// Report says which redirection modes this kernel supports.
type Report struct {
	// Modes lists every mode, in the order a node agent should prefer
	// them.
	Modes []Support
}

// Support is one mode's verdict: Err is nil when the mode works on this
// kernel, and says what is missing otherwise.
type Support struct {
	Mode string
	Err  error
}

// modeProbes are the modes' kernel checks, in order of preference. The
// eBPF check belongs to the eBPF mode's files; tests may replace the list.
var modeProbes = []struct {
	mode  string
	probe func() error
}{
	{"ebpf", ProbeEBPF},
	{"nftables", probeNFTables},
}

// Probe tries each mode against this kernel. It needs the privileges the
// modes themselves need (CAP_NET_ADMIN and CAP_SYS_ADMIN, to make a
// scratch network namespace); without them every mode reports the
// permission error.
func Probe() Report {
	var r Report
	for _, p := range modeProbes {
		r.Modes = append(r.Modes, Support{Mode: p.mode, Err: p.probe()})
	}
	return r
}

// Supported tells whether mode works on this kernel.
func (r Report) Supported(mode string) bool {
	for _, s := range r.Modes {
		if s.Mode == mode {
			return s.Err == nil
		}
	}
	return false
}

// Preferred is the first supported mode, or "" if none is.
func (r Report) Preferred() string {
	for _, s := range r.Modes {
		if s.Err == nil {
			return s.Mode
		}
	}
	return ""
}

// String is one line per mode, for logs and the node agent's start-up
// message: "ebpf: supported" or "nftables: <why not>".
func (r Report) String() string {
	var b strings.Builder
	for i, s := range r.Modes {
		if i > 0 {
			b.WriteString("\n")
		}
		if s.Err == nil {
			fmt.Fprintf(&b, "%s: supported", s.Mode)
		} else {
			fmt.Fprintf(&b, "%s: %v", s.Mode, s.Err)
		}
	}
	return b.String()
}
