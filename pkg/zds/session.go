package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

var errSessionClosed = errors.New("zds connection closed")

// session is the agent's side of one ztunnel connection. Requests go one at
// a time (lockstep with ztunnel's Acks); a reader goroutine delivers each Ack
// to the request waiting for it and notices when the connection drops.
type session struct {
	conn    *Conn
	timeout time.Duration
	log     *slog.Logger

	// slot is held by the request in flight, and by a snapshot as a whole so
	// that pushes queue behind it. A channel, so waiting can be cancelled.
	slot chan struct{}
	acks chan *zdsapi.Ack // at most one ack is ever owed

	mu      sync.Mutex
	waiting bool  // a request has been sent and awaits its ack
	err     error // why the session ended; set once, with done closed
	done    chan struct{}
}

func newSession(conn *Conn, timeout time.Duration, log *slog.Logger) *session {
	return &session{
		conn:    conn,
		timeout: timeout,
		log:     log,
		slot:    make(chan struct{}, 1),
		acks:    make(chan *zdsapi.Ack, 1),
		done:    make(chan struct{}),
	}
}

// close ends the session for err (the first reason wins) and closes the
// socket, which stops the reader.
func (s *session) close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if err == nil {
		err = errSessionClosed
	}
	s.err = err
	close(s.done)
	_ = s.conn.Close()
}

// cause is why the session ended; call only after done is closed.
func (s *session) cause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// acquire takes the request slot.
func (s *session) acquire(ctx context.Context) error {
	select {
	case s.slot <- struct{}{}:
		return nil
	case <-s.done:
		return fmt.Errorf("%w: %w", ErrNotConnected, s.cause())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *session) release() { <-s.slot }

// readAcks runs until the connection fails or is closed.
func (s *session) readAcks(ctx context.Context) {
	for {
		resp, err := s.conn.ReadResponse(ctx)
		if err != nil {
			s.close(err)
			return
		}
		s.mu.Lock()
		owed := s.waiting
		s.waiting = false
		s.mu.Unlock()
		if !owed {
			s.close(invalidf("ack for no request"))
			return
		}
		s.acks <- resp.GetAck()
	}
}

// request sends req and waits for its Ack, at most the ack timeout; the
// caller holds the slot. A transport failure or a missing Ack ends the
// session: what ztunnel applied is then unknown, and it resynchronises
// from a fresh snapshot when it reconnects.
func (s *session) request(ctx context.Context, req *zdsapi.WorkloadRequest, netns *os.File) error {
	if err := checkRequest(req, fdCount(netns)); err != nil {
		return err // the caller's mistake; nothing was sent
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	s.waiting = true
	s.mu.Unlock()

	if err := s.conn.WriteRequest(ctx, req, netns); err != nil {
		s.close(err)
		return err
	}
	select {
	case ack := <-s.acks:
		if ack.GetError() != "" {
			return &AckError{Message: ack.GetError()}
		}
		return nil
	case <-s.done:
		return fmt.Errorf("await ack: %w", s.cause())
	case <-ctx.Done():
		err := fmt.Errorf("await ack: %w", ctx.Err())
		s.close(err)
		return err
	}
}
