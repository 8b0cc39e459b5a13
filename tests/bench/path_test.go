package bench

import (
	"errors"
	"slices"
	"testing"
)

func TestPathRegistry(t *testing.T) {
	if got, want := DefaultPaths(), []string{PathDirect, PathTCPChain, PathTLSChain}; !slices.Equal(got, want) {
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
	z, _ := NewPath(PathZtunnel)
	if _, err := z.Start(t.Context(), nil); !errors.Is(err, ErrZtunnelNotReady) {
		t.Errorf("ztunnel Start = %v, want ErrZtunnelNotReady", err)
	}
}
