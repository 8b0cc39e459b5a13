package ca

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

// Backoff bounds between failed fetches.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 150 * time.Second
)

// Fetcher gets a fresh certificate for an identity; *Client is one.
type Fetcher interface {
	Fetch(ctx context.Context, id spiffe.Identity) (*Certificate, error)
}

// Manager holds the certificates of the identities ztunnel serves.
type Manager struct {
	fetcher Fetcher
	log     *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	certs map[spiffe.Identity]*entry
}

type entry struct {
	ready  chan struct{} // closed once the first fetch ended
	cert   *Certificate
	err    error // of the first fetch, while there is no certificate
	cancel context.CancelFunc
}

// NewManager starts a manager; Close stops its renewals.
func NewManager(f Fetcher, log *slog.Logger) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{fetcher: f, log: log, ctx: ctx, cancel: cancel, certs: map[spiffe.Identity]*entry{}}
}

// Get returns the current certificate for id, fetching it on first use.
// Concurrent callers for one identity share one fetch.
func (m *Manager) Get(ctx context.Context, id spiffe.Identity) (*Certificate, error) {
	m.mu.Lock()
	e, ok := m.certs[id]
	if !ok {
		ectx, cancel := context.WithCancel(m.ctx)
		e = &entry{ready: make(chan struct{}), cancel: cancel}
		m.certs[id] = e
		m.wg.Add(1)
		go m.maintain(ectx, id, e)
	}
	m.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.cert != nil && time.Now().Before(e.cert.Leaf.NotAfter) {
		return e.cert, nil
	}
	if e.err != nil {
		return nil, e.err
	}
	return nil, fmt.Errorf("certificate for %s expired and not yet renewed", id)
}

// Forget drops an identity no local workload uses any more.
func (m *Manager) Forget(id spiffe.Identity) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.certs[id]; ok {
		e.cancel()
		delete(m.certs, id)
	}
}

// Certificates returns the current certificates, for the config dump.
func (m *Manager) Certificates() []*Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Certificate
	for _, e := range m.certs {
		if e.cert != nil {
			out = append(out, e.cert)
		}
	}
	return out
}

// Close stops all renewals.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
}

// maintain fetches id's certificate, then renews it at half-life for as
// long as the entry lives, retrying failures with exponential backoff and
// keeping the old certificate meanwhile.
func (m *Manager) maintain(ctx context.Context, id spiffe.Identity, e *entry) {
	defer m.wg.Done()
	backoff := minBackoff
	first := true
	for {
		cert, err := m.fetcher.Fetch(ctx, id)
		m.mu.Lock()
		if err == nil {
			e.cert, e.err = cert, nil
		} else if e.cert == nil {
			e.err = err
		}
		m.mu.Unlock()
		if first {
			close(e.ready)
			first = false
		}
		var wait time.Duration
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("certificate fetch failed", "identity", id.String(), "retry_in", backoff, "error", err)
			wait = backoff
			backoff = min(backoff*2, maxBackoff)
		} else {
			backoff = minBackoff
			// Half of the validity left as it arrives: a CA may backdate
			// NotBefore for clock skew, by more than a short lifetime, and
			// half-life from NotBefore would then be past already.
			start := cert.Leaf.NotBefore
			if now := time.Now(); now.After(start) {
				start = now
			}
			wait = cert.Leaf.NotAfter.Sub(start) / 2
			m.log.Info("certificate issued", "identity", id.String(), "expires", cert.Leaf.NotAfter, "renew_in", wait.Round(time.Second))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
