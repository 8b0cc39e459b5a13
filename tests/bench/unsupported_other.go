//go:build !linux

package bench

import (
	"errors"
	"time"
)

// The harness needs Linux network namespaces and /proc. These stubs keep
// the package building elsewhere, so its pure parts still test.

var errUnsupported = errors.New("netbench needs Linux")

type loadSample struct{}

func sampleLoad() (loadSample, error)          { return loadSample{}, errUnsupported }
func otherCPUs(loadSample, loadSample) float64 { return 0 }
func lockPreciseThread() error                 { return nil }
func sleepUntil(t time.Time)                   { time.Sleep(time.Until(t)) }
