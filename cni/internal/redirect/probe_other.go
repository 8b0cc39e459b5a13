//go:build !linux

package redirect

func probeNFTables() error { return errNoNFTables }
