//go:build !linux

package redirect

import (
	"errors"
	"log/slog"
)

// ErrEBPFUnsupported is returned (wrapped) when the kernel lacks what the
// eBPF mode needs.
var ErrEBPFUnsupported = errors.New("kernel lacks eBPF redirection support")

// EBPF is the eBPF mode, which exists only on Linux.
type EBPF struct {
	Log *slog.Logger
}

// NewEBPF returns the eBPF mode.
func NewEBPF(log *slog.Logger) *EBPF { return &EBPF{Log: log} }

// Name implements Mode.
func (*EBPF) Name() string { return "ebpf" }

// ProbeEBPF always fails off Linux.
func ProbeEBPF() error { return ErrEBPFUnsupported }

// Apply implements Mode; it always fails off Linux.
func (*EBPF) Apply(string, Config) error { return ErrEBPFUnsupported }

// Remove implements Mode; there is nothing to remove off Linux.
func (*EBPF) Remove(string) error { return nil }
