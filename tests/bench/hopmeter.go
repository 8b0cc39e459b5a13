package bench

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/tests/procstat"
)

// hopMeter reads the proxies' CPU time at the client's marks, so CPU is
// charged to exactly the measured window. It is fed from a Proc's reader
// goroutine and read once the client has exited.
type hopMeter struct {
	procs []*Proc

	mu         sync.Mutex
	start, end []time.Duration
	err        error
}

func (m *hopMeter) mark(name string) {
	if len(m.procs) == 0 {
		return
	}
	cpu := make([]time.Duration, len(m.procs))
	var errs []error
	for i, p := range m.procs {
		var err error
		if cpu[i], err = procstat.CPU(p.Pid()); err != nil {
			errs = append(errs, fmt.Errorf("cpu of %s: %w", p.Name, err))
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = errors.Join(append(errs, m.err)...)
	switch name {
	case markStart:
		m.start = cpu
	case markEnd:
		m.end = cpu
	}
}

// deltas returns each proxy's CPU time over the measured window.
func (m *hopMeter) deltas() ([]time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if m.start == nil || m.end == nil {
		return nil, errors.New("client marked no measured window")
	}
	d := make([]time.Duration, len(m.procs))
	for i := range d {
		d[i] = m.end[i] - m.start[i]
	}
	return d, nil
}
