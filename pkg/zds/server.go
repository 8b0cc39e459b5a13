package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// DefaultAckTimeout bounds the wait for each Ack, as in Istio's agent.
const DefaultAckTimeout = 5 * time.Second

// Workload is an enrolled pod as the node agent hands it to ztunnel.
type Workload struct {
	UID  string // pod UID
	Info *zdsapi.WorkloadInfo
	// Netns is the pod's network namespace. The server only lends it to the
	// kernel and never closes it. In a snapshot, nil sends KeepWorkload: the
	// pod is known but its netns is not (ztunnel keeps what it has).
	Netns *os.File
}

// Server is the node agent's end of ZDS. Each ztunnel that connects gets a
// snapshot of the enrolled pods, then the changes pushed with AddWorkload
// and DelWorkload, which go to the most recent connection (during a ztunnel
// upgrade the old one keeps its state until it leaves).
//
// Update the pod state Snapshot reads before pushing a change: a change
// pushed while a snapshot is being sent then either is in the snapshot or
// follows it.
type Server struct {
	// Snapshot returns the enrolled pods; called for each new connection.
	Snapshot func(ctx context.Context) ([]Workload, error)
	// AckTimeout bounds each wait for an Ack; DefaultAckTimeout if zero.
	AckTimeout time.Duration
	// Logger; nothing is logged if nil.
	Logger *slog.Logger

	mu     sync.Mutex
	conns  map[*session]struct{} // every open connection
	active []*session            // connections past their snapshot start, oldest first
}

// Serve accepts ztunnel connections on ln until ctx ends, then closes ln and
// every connection and returns nil once all its goroutines have exited.
// Serve owns ln.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer func() {
		_ = ln.Close()
		s.closeAll()
		wg.Wait()
	}()
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept zds: %w", err)
			}
			// Out of fds and the like: wait for the pressure to pass.
			s.logger().Warn("accept failed", "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		sess := newSession(NewConn(uc), s.ackTimeout(), s.logger())
		s.mu.Lock()
		if s.conns == nil {
			s.conns = make(map[*session]struct{})
		}
		s.conns[sess] = struct{}{}
		s.mu.Unlock()
		wg.Go(func() {
			defer s.forget(sess)
			s.serveConn(ctx, sess)
		})
	}
}

// AddWorkload enrolls w with the connected ztunnel and returns once it has
// acked; a refusal is an *AckError.
func (s *Server) AddWorkload(ctx context.Context, w Workload) error {
	if w.Netns == nil {
		return fmt.Errorf("add %s: %w", w.UID, invalidf("no netns"))
	}
	if err := s.push(ctx, addRequest(w), w.Netns); err != nil {
		return fmt.Errorf("add %s: %w", w.UID, err)
	}
	return nil
}

// DelWorkload removes the pod uid from the connected ztunnel.
func (s *Server) DelWorkload(ctx context.Context, uid string) error {
	req := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}}
	if err := s.push(ctx, req, nil); err != nil {
		return fmt.Errorf("del %s: %w", uid, err)
	}
	return nil
}

func (s *Server) push(ctx context.Context, req *zdsapi.WorkloadRequest, netns *os.File) error {
	s.mu.Lock()
	var sess *session
	if n := len(s.active); n > 0 {
		sess = s.active[n-1]
	}
	s.mu.Unlock()
	if sess == nil {
		return ErrNotConnected
	}
	if err := sess.acquire(ctx); err != nil {
		return err
	}
	defer sess.release()
	return sess.request(ctx, req, netns)
}

func (s *Server) serveConn(ctx context.Context, sess *session) {
	log := sess.log
	defer sess.close(nil)

	hctx, cancel := context.WithTimeout(ctx, sess.timeout)
	hello, err := sess.conn.ReadHello(hctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("ztunnel connection dropped before hello", "err", err)
		}
		return
	}
	log.Info("ztunnel connected", "version", hello.GetVersion().String())

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sess.readAcks(ctx)
	}()
	defer func() {
		sess.close(nil)
		<-readerDone
	}()

	if err := s.sendSnapshot(ctx, sess); err != nil {
		if ctx.Err() == nil {
			log.Warn("snapshot to ztunnel failed", "err", err)
		}
		return
	}
	<-sess.done
	if err := sess.cause(); !errors.Is(err, errSessionClosed) {
		log.Info("ztunnel disconnected", "err", err)
	}
}

func (s *Server) sendSnapshot(ctx context.Context, sess *session) error {
	if err := sess.acquire(ctx); err != nil {
		return err
	}
	defer sess.release()
	// Take pushes from here on: they queue behind the snapshot, so none is
	// lost between reading the state and ztunnel receiving it.
	s.mu.Lock()
	s.active = append(s.active, sess)
	s.mu.Unlock()

	var ws []Workload
	if s.Snapshot != nil {
		var err error
		if ws, err = s.Snapshot(ctx); err != nil {
			return fmt.Errorf("read snapshot: %w", err)
		}
	}
	for _, w := range ws {
		req := addRequest(w)
		if w.Netns == nil {
			req = &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: w.UID}}}
		}
		if err := sess.request(ctx, req, w.Netns); err != nil {
			// One pod ztunnel cannot serve must not hold back the others.
			if ackErr := (*AckError)(nil); errors.As(err, &ackErr) {
				sess.log.Warn("ztunnel refused workload", "uid", w.UID, "err", err)
				continue
			}
			return fmt.Errorf("snapshot %s: %w", w.UID, err)
		}
	}
	done := &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}
	if err := sess.request(ctx, done, nil); err != nil {
		if ackErr := (*AckError)(nil); errors.As(err, &ackErr) {
			sess.log.Warn("ztunnel refused snapshot end", "err", err)
			return nil
		}
		return fmt.Errorf("snapshot end: %w", err)
	}
	sess.log.Info("snapshot sent", "workloads", len(ws))
	return nil
}

func (s *Server) forget(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, sess)
	s.active = slices.DeleteFunc(s.active, func(x *session) bool { return x == sess })
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sess := range s.conns {
		sess.close(nil)
	}
}

func (s *Server) ackTimeout() time.Duration {
	if s.AckTimeout > 0 {
		return s.AckTimeout
	}
	return DefaultAckTimeout
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func addRequest(w Workload) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{
		Add: &zdsapi.AddWorkload{Uid: w.UID, WorkloadInfo: w.Info},
	}}
}
