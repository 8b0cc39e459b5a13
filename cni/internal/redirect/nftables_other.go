//go:build !linux

package redirect

import "errors"

var errNoNFTables = errors.New("nftables redirection needs Linux")

// Apply fails: nftables is Linux-only.
func (NFTables) Apply(string, Config) error { return errNoNFTables }

// Remove fails: nftables is Linux-only.
func (NFTables) Remove(string) error { return errNoNFTables }
