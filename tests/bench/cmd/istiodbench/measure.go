package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ambient-mesh/mesh/tests/adsclient"
)

// tracker reads the client's responses, each once, and records when each
// name it watches first arrived.
type tracker struct {
	c       *adsclient.Client
	next    int            // first response not read yet
	index   map[string]int // watched name -> slot in arrived
	arrived []time.Time
	missing int

	responses, bytes, largest int
}

func newTracker(c *adsclient.Client, from int, names []string) *tracker {
	t := &tracker{c: c, next: from, index: make(map[string]int, len(names)), arrived: make([]time.Time, len(names)), missing: len(names)}
	for i, n := range names {
		t.index[n] = i
	}
	return t
}

func (t *tracker) read() {
	rs := t.c.Responses(t.next)
	t.next += len(rs)
	for _, r := range rs {
		t.responses++
		t.bytes += r.Size
		t.largest = max(t.largest, r.Size)
		if r.TypeURL != adsclient.AddressType || r.NACKed {
			continue
		}
		for _, n := range r.Resources {
			if i, ok := t.index[n]; ok && t.arrived[i].IsZero() {
				t.arrived[i] = r.Arrived
				t.missing--
			}
		}
	}
}

// wait returns once every watched name has arrived.
func (t *tracker) wait(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := t.c.Wait(ctx, func() bool { t.read(); return t.missing == 0 })
	if err != nil {
		return fmt.Errorf("%d of %d pods and services still missing at the client: %w", t.missing, len(t.arrived), err)
	}
	return nil
}

// waitQuiet returns once no response has arrived for quiet, so that what
// follows is not mixed with the tail of what came before.
func waitQuiet(ctx context.Context, c *adsclient.Client, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := c.ResponseCount()
		qctx, cancel := context.WithTimeout(ctx, quiet)
		err := c.Wait(qctx, func() bool { return c.ResponseCount() != n })
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return nil
		case err != nil:
			return err
		case time.Now().After(deadline):
			return fmt.Errorf("responses still arriving after %s", timeout)
		}
	}
}

// change is what one change to the cluster cost at the client.
type change struct {
	latency   time.Duration // change sent -> last expected resource arrived
	bytes     int           // encoded responses that carried the run's resources
	resources int           // resources and removals in those responses
	responses int
	foreign   int // responses about other users' objects, not counted above
	// extra are the run's names that arrived besides the expected ones.
	extra []string
}

// measureChange applies do and waits until every name in expect has
// arrived with a new version, then for quiet, and adds up the responses
// that arrived meanwhile.
func measureChange(ctx context.Context, c *adsclient.Client, ours func(string) bool, expect []string, quiet time.Duration, do func(context.Context) error) (change, error) {
	before := make([]string, len(expect))
	for i, n := range expect {
		r, _ := c.Resource(adsclient.AddressType, n)
		before[i] = r.Version
	}
	from := c.ResponseCount()
	start := time.Now()
	if err := do(ctx); err != nil {
		return change{}, err
	}
	var last time.Time
	arrived := func() bool {
		last = time.Time{}
		for i, n := range expect {
			r, ok := c.Resource(adsclient.AddressType, n)
			if !ok || r.Version == before[i] {
				return false
			}
			if r.LastArrived.After(last) {
				last = r.LastArrived
			}
		}
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := c.Wait(wctx, arrived)
	cancel()
	if err != nil {
		return change{}, fmt.Errorf("change to %s did not arrive: %w", strings.Join(expect, ", "), err)
	}
	if err := waitQuiet(ctx, c, quiet, 10*time.Second); err != nil {
		return change{}, err
	}
	ch := change{latency: last.Sub(start)}
	for _, r := range c.Responses(from) {
		mine := false
		for _, n := range r.Resources {
			mine = mine || ours(n)
		}
		for _, n := range r.Removed {
			mine = mine || ours(n)
		}
		if !mine {
			ch.foreign++
			continue
		}
		ch.responses++
		ch.bytes += r.Size
		ch.resources += len(r.Resources) + len(r.Removed)
		for _, n := range append(slices.Clone(r.Resources), r.Removed...) {
			if !slices.Contains(expect, n) {
				ch.extra = append(ch.extra, n)
			}
		}
	}
	return ch, nil
}
