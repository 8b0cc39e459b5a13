//go:build !linux

package hostprobe

import (
	"errors"
	"net/netip"
)

var errNotLinux = errors.New("hostprobe: needs Linux nftables")

// SNAT needs Linux.
type SNAT struct{}

// Install needs Linux.
func (*SNAT) Install([]netip.Addr) error { return errNotLinux }

// Add needs Linux.
func (*SNAT) Add(netip.Addr) error { return errNotLinux }

// Delete needs Linux.
func (*SNAT) Delete(netip.Addr) error { return errNotLinux }

// Remove needs Linux.
func (*SNAT) Remove() error { return errNotLinux }
