package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// drainTimeout bounds the wait for the last responses after the schedule
// ends; a path that loses a request fails the run instead of hanging it.
const drainTimeout = 30 * time.Second

// measureRate offers requests on an open-loop schedule: request i is due at
// start + i/Rate whatever happened to earlier ones, and its latency runs
// from that due time to its response. A slow response therefore delays the
// requests queued behind it and they count the wait, instead of the client
// quietly sending fewer (coordinated omission). Requests go out on whichever
// pooled connection is free; when none is, they queue in order.
func measureRate(ctx context.Context, addr string, s ClientSpec, out *emitter) (*ClientResult, error) {
	if s.Rate <= 0 || s.Conns <= 0 || s.Size <= 0 {
		return nil, fmt.Errorf("rate %d, conns %d, size %d: all must be positive", s.Rate, s.Conns, s.Size)
	}
	conns, err := dialAll(ctx, addr, modeEcho, s.Conns)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopClose := closeOnDone(ctx, conns)
	defer stopClose()

	r := &rateRun{
		req:     bytes.Repeat([]byte{'q'}, s.Size),
		size:    s.Size,
		fail:    cancel,
		drained: make(chan struct{}),
	}
	var readers sync.WaitGroup
	for _, c := range conns {
		rc := &rateConn{c: c}
		r.free = append(r.free, rc)
		readers.Go(func() { r.read(rc) })
	}

	lag, err := r.dispatch(ctx, s, out)
	if err == nil {
		err = r.waitDrained(ctx)
	}
	if err == nil {
		err = out.emit(event{Type: evMark, Mark: markEnd})
	}
	r.mu.Lock()
	r.finished = true
	r.mu.Unlock()
	stopClose()
	readers.Wait()
	if err != nil {
		return nil, err
	}
	lat := summarize(r.lat)
	return &ClientResult{Mode: ModeRate, Latency: &lat, DispatchLag: &lag}, nil
}

type pending struct {
	due    time.Time
	record bool // false during warm-up
}

type rateConn struct {
	c   net.Conn
	cur pending // the request in flight; guarded by rateRun.mu
}

type rateRun struct {
	req  []byte
	size int
	fail context.CancelCauseFunc

	mu          sync.Mutex
	free        []*rateConn
	backlog     []pending
	lat         []time.Duration
	outstanding int
	dispatched  bool // the schedule is done; drained closes at zero outstanding
	finished    bool // the run is over; read errors are expected
	drained     chan struct{}
}

// dispatch runs the schedule on a thread of its own that sleeps with
// nanosecond timer slack. Go's timers wake on a ~1 ms grid on this kernel,
// which would add up to a millisecond of harness noise to every request; a
// nanosleep wakes as soon as the kernel schedules the thread (tens of
// microseconds in a small VM). It returns how late the measured wake-ups
// were.
func (r *rateRun) dispatch(ctx context.Context, s ClientSpec, out *emitter) (Summary, error) {
	type result struct {
		lag Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread's timer slack stays changed, so the
		// runtime must discard the thread when this goroutine ends.
		if err := lockPreciseThread(); err != nil {
			done <- result{err: err}
			return
		}
		interval := time.Second / time.Duration(s.Rate)
		warm := int(s.Warmup / interval)
		total := warm + int(s.Duration/interval)
		lags := make([]time.Duration, 0, total)
		start := time.Now()
		for i := range total {
			if ctx.Err() != nil {
				done <- result{err: context.Cause(ctx)}
				return
			}
			due := start.Add(time.Duration(i) * interval)
			sleepUntil(due)
			if i >= warm {
				lags = append(lags, time.Since(due))
			}
			if i == warm {
				if err := out.emit(event{Type: evMark, Mark: markStart}); err != nil {
					done <- result{err: err}
					return
				}
			}
			r.submit(pending{due: due, record: i >= warm})
		}
		r.mu.Lock()
		r.dispatched = true
		if r.outstanding == 0 {
			close(r.drained)
		}
		r.mu.Unlock()
		done <- result{lag: summarize(lags)}
	}()
	res := <-done
	return res.lag, res.err
}

func (r *rateRun) submit(p pending) {
	r.mu.Lock()
	r.outstanding++
	if len(r.free) == 0 {
		r.backlog = append(r.backlog, p)
		r.mu.Unlock()
		return
	}
	// First in, first out, so requests spread over the whole pool as a
	// load generator's connections do.
	rc := r.free[0]
	r.free = r.free[1:]
	rc.cur = p
	r.mu.Unlock()
	r.send(rc)
}

func (r *rateRun) send(rc *rateConn) {
	if _, err := rc.c.Write(r.req); err != nil {
		r.failRead(fmt.Errorf("send request: %w", err))
	}
}

// read owns rc's responses: it records each, then sends the next queued
// request on rc or returns rc to the pool.
func (r *rateRun) read(rc *rateConn) {
	resp := make([]byte, r.size)
	for {
		if _, err := io.ReadFull(rc.c, resp); err != nil {
			r.failRead(fmt.Errorf("read response: %w", err))
			return
		}
		now := time.Now()
		r.mu.Lock()
		if rc.cur.record {
			r.lat = append(r.lat, now.Sub(rc.cur.due))
		}
		r.outstanding--
		if r.dispatched && r.outstanding == 0 {
			close(r.drained)
		}
		if len(r.backlog) == 0 {
			r.free = append(r.free, rc)
			r.mu.Unlock()
			continue
		}
		rc.cur = r.backlog[0]
		r.backlog = r.backlog[1:]
		r.mu.Unlock()
		r.send(rc)
	}
}

func (r *rateRun) failRead(err error) {
	r.mu.Lock()
	finished := r.finished
	r.mu.Unlock()
	if !finished {
		r.fail(err)
	}
}

func (r *rateRun) waitDrained(ctx context.Context) error {
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-r.drained:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return errors.New("responses still missing after the schedule ended")
	}
}
