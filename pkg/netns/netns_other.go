//go:build !linux

package netns

import (
	"errors"
	"os"
)

var errUnsupported = errors.New("network namespaces need Linux")

// NS is an open handle on a network namespace (Linux only).
type NS struct{}

func Open(string) (*NS, error)       { return nil, errUnsupported }
func FromFile(*os.File) (*NS, error) { return nil, errUnsupported }
func New() (*NS, error)              { return nil, errUnsupported }
func (*NS) Fd() uintptr              { return 0 }
func (*NS) Inode() (uint64, error)   { return 0, errUnsupported }
func (*NS) Close() error             { return nil }
func (*NS) Do(func() error) error    { return errUnsupported }
