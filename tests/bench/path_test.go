package bench

import (
	"slices"
	"testing"
)

func TestPathRegistry(t *testing.T) {
	if got, want := DefaultPaths(), []string{PathDirect, PathTCPChain, PathTLSChain, PathZtunnel}; !slices.Equal(got, want) {
		t.Errorf("DefaultPaths() = %v, want %v", got, want)
	}
	for _, name := range []string{PathDirect, PathTCPChain, PathTLSChain, PathZtunnel} {
		p, err := NewPath(name)
		if err != nil {
			t.Fatalf("NewPath(%q): %v", name, err)
		}
		if p.Name() != name {
			t.Errorf("NewPath(%q).Name() = %q", name, p.Name())
		}
	}
	if _, err := NewPath("nope"); err == nil {
		t.Error("NewPath accepted an unknown name")
	}
}
