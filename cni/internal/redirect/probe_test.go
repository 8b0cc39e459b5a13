package redirect

import (
	"errors"
	"testing"
)

func TestReport(t *testing.T) {
	saved := modeProbes
	t.Cleanup(func() { modeProbes = saved })
	missing := errors.New("no sk_lookup")
	modeProbes = []struct {
		mode  string
		probe func() error
	}{
		{"ebpf", func() error { return missing }},
		{"nftables", func() error { return nil }},
	}
	r := Probe()
	if r.Supported("ebpf") || !r.Supported("nftables") || r.Supported("iptables") {
		t.Errorf("Supported wrong for %+v", r)
	}
	if got := r.Preferred(); got != "nftables" {
		t.Errorf("Preferred = %q, want nftables", got)
	}
	if !errors.Is(r.Modes[0].Err, missing) {
		t.Errorf("ebpf error = %v, want the probe's", r.Modes[0].Err)
	}
	if got, want := r.String(), "ebpf: no sk_lookup\nnftables: supported"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got := (Report{}).Preferred(); got != "" {
		t.Errorf("empty report prefers %q", got)
	}
}
