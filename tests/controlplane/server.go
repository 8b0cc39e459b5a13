package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// The resource types served, as ztunnel subscribes to them.
const (
	AddressType       = "type.googleapis.com/istio.workload.Address"
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// types are the served types, in the order a full sync covers them.
var types = []string{AddressType, AuthorizationType}

// DefaultServerName is the name istiod serves under and ztunnel verifies.
const DefaultServerName = "istiod.istio-system.svc"

// Options configure a Server.
type Options struct {
	Authority *Authority
	// Token is the bearer token the CA accepts. It is required: a CA that
	// accepts anyone would hide a client that forgot to send its token.
	Token string
	// ServerName is the DNS name in the serving certificate; default
	// DefaultServerName.
	ServerName string
	// Log may be nil.
	Log *slog.Logger
}

// NACK is one response a client rejected.
type NACK struct {
	TypeURL string
	Nonce   string
	// Names are the resources the rejected response updated or removed, or
	// nil if the nonce was not one this stream was sent.
	Names   []string
	Message string
	// Node is the node ID the stream announced.
	Node string
}

// String is for logs.
func (n NACK) String() string {
	return fmt.Sprintf("NACK %s nonce %s %v from %q: %s", n.TypeURL, n.Nonce, n.Names, n.Node, n.Message)
}

// Server is the control plane. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger
	cert tls.Certificate

	mu        sync.Mutex
	version   uint64                         // bumped by every change
	nonce     uint64                         // bumped by every response
	resources map[string]map[string]resource // type URL -> name -> resource
	streams   map[*adsStream]struct{}
	nacks     []NACK
	// changed is closed and replaced whenever something a waiter might be
	// waiting for happens (an ACK, a NACK, a stream coming or going).
	changed   chan struct{}
	caTTL     time.Duration
	caFailing bool
	caHold    chan struct{} // closed to release held CreateCertificate calls
	issued    map[string]int
	grpc      *grpc.Server // nil while stopped

	// running counts Serve calls and stream receive goroutines so Stop can
	// return only once all of them have.
	running sync.WaitGroup
}

type resource struct {
	version string
	body    *anypb.Any
}

// New makes a stopped Server; call Start or Serve.
func New(opts Options) (*Server, error) {
	if opts.Authority == nil {
		return nil, errors.New("controlplane: Options.Authority is required")
	}
	if opts.Token == "" {
		return nil, errors.New("controlplane: Options.Token is required")
	}
	if opts.ServerName == "" {
		opts.ServerName = DefaultServerName
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cert, err := opts.Authority.ServerTLS(opts.ServerName)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return &Server{
		opts:      opts,
		log:       log,
		cert:      cert,
		resources: map[string]map[string]resource{},
		streams:   map[*adsStream]struct{}{},
		changed:   make(chan struct{}),
		issued:    map[string]int{},
	}, nil
}

// Serve serves ADS and the CA over TLS on ln until Stop. It returns nil
// after Stop. Only one Serve or Start may be active at a time.
func (s *Server) Serve(ln net.Listener) error {
	run, err := s.prepare(ln)
	if err != nil {
		_ = ln.Close()
		return err
	}
	return run()
}

// Start listens on a unix socket at path (replacing a stale one left by a
// crash) and serves in the background. After Stop it may be called again
// on the same path; the state is kept.
func (s *Server) Start(unixPath string) error {
	if err := os.Remove(unixPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("controlplane: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", unixPath)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	run, err := s.prepare(ln)
	if err != nil {
		_ = ln.Close()
		return err
	}
	go func() {
		if err := run(); err != nil {
			s.log.Error("control plane stopped serving", "path", unixPath, "error", err)
		}
	}()
	return nil
}

// prepare makes the gRPC server under the lock, so that a concurrent Stop
// either sees it or happens before it.
func (s *Server) prepare(ln net.Listener) (func() error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpc != nil {
		return nil, errors.New("controlplane: already serving")
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12})),
		// Stop must not return while a handler still touches the state.
		grpc.WaitForHandlers(true),
		// Do not send GOAWAY to a client that keeps its idle connection
		// alive more eagerly than gRPC's 5 minute default allows; the
		// failure would look like a ztunnel bug.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	)
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, adsService{s: s})
	pb.RegisterIstioCertificateServiceServer(gs, caService{s: s})
	s.grpc = gs
	s.running.Add(1)
	return func() error {
		defer s.running.Done()
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("controlplane: serve: %w", err)
		}
		return nil
	}, nil
}

// Stop closes the listener and every connection at once, as a crashing
// istiod would, and returns when every handler has. It is a no-op while
// stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	gs := s.grpc
	s.grpc = nil
	s.mu.Unlock()
	if gs == nil {
		return
	}
	// gs.Stop waits for the handlers, so no receive goroutine is added to
	// running after it returns.
	gs.Stop()
	s.running.Wait()
}

// SetWorkload adds or replaces a workload, named by its uid.
func (s *Server) SetWorkload(w *workloadapi.Workload) {
	s.update(AddressType, w.GetUid(), mustAny(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}))
}

// SetService adds or replaces a service, named namespace/hostname.
func (s *Server) SetService(svc *workloadapi.Service) {
	s.update(AddressType, svc.GetNamespace()+"/"+svc.GetHostname(), mustAny(&workloadapi.Address{Type: &workloadapi.Address_Service{Service: svc}}))
}

// RemoveAddress removes a workload (by uid) or service (namespace/hostname).
func (s *Server) RemoveAddress(name string) { s.update(AddressType, name, nil) }

// SetAuthorization adds or replaces a policy, named namespace/name.
func (s *Server) SetAuthorization(p *security.Authorization) {
	s.update(AuthorizationType, p.GetNamespace()+"/"+p.GetName(), mustAny(p))
}

// RemoveAuthorization removes a policy named namespace/name.
func (s *Server) RemoveAuthorization(name string) { s.update(AuthorizationType, name, nil) }

// SetRaw pushes an arbitrary, possibly invalid, body under typeURL, for
// NACK tests. A nil body is sent as a resource without a body.
func (s *Server) SetRaw(typeURL, name string, body *anypb.Any) {
	if body == nil {
		body = &anypb.Any{}
	}
	s.update(typeURL, name, body)
}

// mustAny panics because the setters have no error to return and a message
// that does not marshal (invalid UTF-8 in a string) is a bug in the test.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Errorf("controlplane: marshal %T: %w", m, err))
	}
	return a
}

// NACKs returns every rejection received so far, oldest first.
func (s *Server) NACKs() []NACK {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]NACK(nil), s.nacks...)
}

// WaitNACKs waits until at least n rejections have been received.
func (s *Server) WaitNACKs(ctx context.Context, n int) ([]NACK, error) {
	var got []NACK
	err := s.wait(ctx, func() bool {
		got = append(got[:0], s.nacks...)
		return len(got) >= n
	})
	if err != nil {
		return got, fmt.Errorf("waiting for %d NACKs, have %d: %w", n, len(got), err)
	}
	return got, nil
}

// WaitAcked waits until n live streams have subscribed to both types and
// ACKed the newest response of each, that is until config has reached n
// clients. A NACKed response is not ACKed: the stream counts again once it
// ACKs a later push.
func (s *Server) WaitAcked(ctx context.Context, n int) error {
	var got int
	err := s.wait(ctx, func() bool {
		got = 0
		for st := range s.streams {
			if st.syncedLocked() {
				got++
			}
		}
		return got >= n
	})
	if err != nil {
		return fmt.Errorf("waiting for %d streams to ACK everything, %d did: %w", n, got, err)
	}
	return nil
}

// Connected is the number of live ADS streams.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// wait calls cond under the lock each time something changed until it
// holds or ctx ends.
func (s *Server) wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
