package ads

import (
	"cmp"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

// Names of Envoy's aggregated discovery service; the method path they form
// is xdsapi.DeltaADSMethod, which is what the wire carries.
const (
	ServiceName = "envoy.service.discovery.v3.AggregatedDiscoveryService"
	StreamName  = "DeltaAggregatedResources"
)

// deltaADS is the handler type of the service description, so that
// RegisterService can check the implementation.
type deltaADS interface {
	deltaAggregatedResources(grpc.ServerStream) error
}

// serviceDesc is written by hand so that no Envoy API package is linked:
// the messages are xdsapi's, wire-compatible with Envoy's, and grpc's
// default proto codec encodes them.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*deltaADS)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    StreamName,
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(deltaADS).deltaAggregatedResources(stream)
		},
	}},
	Metadata: "envoy/service/discovery/v3/ads.proto",
}

// Stats are the server's counters since it was created.
type Stats struct {
	Connected       int64 // streams open now
	Pushes          int64 // responses sent
	ResourcesPushed int64 // resources carried by those responses
	RemovalsPushed  int64 // removed names carried by those responses
	NACKs           int64 // responses rejected by clients
}

// Observer is told of each response sent and each response rejected, for
// metrics. Its methods run on connection goroutines, Rejected under the
// connection's lock: they must return quickly and must not call the Server.
type Observer interface {
	Pushed(Push)
	Rejected(typeURL string)
}

// Push describes one response, after it was handed to the transport.
type Push struct {
	TypeURL   string
	Resources int
	Removed   int
	Bytes     int           // encoded size
	Build     time.Duration // reading the cache and assembling it
	Send      time.Duration // handing it to the transport
	// Waited is how long the oldest change it carries, a cache write or a
	// subscription, waited to be sent: the client's view of push latency,
	// including any wait for the ACK of the previous response.
	Waited time.Duration
}

// Server serves the resources of a Cache as Delta ADS.
type Server struct {
	cache    *Cache
	log      *slog.Logger
	observer atomic.Pointer[Observer]

	mu    sync.Mutex
	conns map[*conn]struct{}

	nextID          atomic.Uint64
	nonce           atomic.Uint64
	connected       atomic.Int64
	pushes          atomic.Int64
	resourcesPushed atomic.Int64
	removalsPushed  atomic.Int64
	nacks           atomic.Int64
}

// NewServer returns a server for cache. A nil log discards.
func NewServer(cache *Cache, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cache: cache, log: log, conns: map[*conn]struct{}{}}
}

// SetObserver makes o receive the server's events from now on; nil stops
// them.
func (s *Server) SetObserver(o Observer) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&o)
}

func (s *Server) obs() Observer {
	if p := s.observer.Load(); p != nil {
		return *p
	}
	return nil
}

// Register adds the DeltaAggregatedResources handler to r.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	r.RegisterService(&serviceDesc, s)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connected:       s.connected.Load(),
		Pushes:          s.pushes.Load(),
		ResourcesPushed: s.resourcesPushed.Load(),
		RemovalsPushed:  s.removalsPushed.Load(),
		NACKs:           s.nacks.Load(),
	}
}

// Connections describes every open stream, oldest first.
func (s *Server) Connections() []ConnectionInfo {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	out := make([]ConnectionInfo, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.info())
	}
	slices.SortFunc(out, func(a, b ConnectionInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Held returns what the client on stream id holds, as far as the server
// knows: type URL to resource name to version. That is what it reported
// when it resumed, plus what was sent to it, minus what was removed. A
// version counts from the moment it is sent, so it includes one the client
// has not acknowledged yet or has rejected. ok is false if no such stream
// is open.
func (s *Server) Held(id uint64) (held map[string]map[string]string, ok bool) {
	s.mu.Lock()
	var found *conn
	for c := range s.conns {
		if c.id == id {
			found = c
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return nil, false
	}
	return found.held(), true
}

func (s *Server) deltaAggregatedResources(stream grpc.ServerStream) error {
	c := &conn{
		id:          s.nextID.Add(1),
		s:           s,
		connectedAt: time.Now(),
		types:       map[string]*typeState{},
		wake:        make(chan struct{}, 1),
	}
	if p, ok := peer.FromContext(stream.Context()); ok && p.Addr != nil {
		c.peerAddr = p.Addr.String()
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.connected.Add(1)
	s.cache.watch(c)
	defer func() {
		s.cache.unwatch(c)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.connected.Add(-1)
		s.log.Info("xds client disconnected", "conn", c.id, "node", c.nodeID())
	}()

	// Requests are read on their own goroutine so that ACKs and
	// subscriptions are taken in while this one is blocked sending to a
	// slow client. It ends when RecvMsg fails, which grpc guarantees once
	// this handler returns; errCh is buffered so it never waits for us.
	errCh := make(chan error, 1)
	go func() {
		for {
			req := &xdsapi.DeltaDiscoveryRequest{}
			if err := stream.RecvMsg(req); err != nil {
				errCh <- err
				return
			}
			if err := c.handle(req); err != nil {
				errCh <- err
				return
			}
			c.poke()
		}
	}()

	ctx := stream.Context()
	for {
		for {
			start := time.Now()
			resp, since := c.next()
			if resp == nil {
				break
			}
			built := time.Now()
			if err := stream.SendMsg(resp); err != nil {
				return err
			}
			s.pushes.Add(1)
			s.resourcesPushed.Add(int64(len(resp.Resources)))
			s.removalsPushed.Add(int64(len(resp.RemovedResources)))
			if o := s.obs(); o != nil {
				sent := time.Now()
				o.Pushed(Push{
					TypeURL:   resp.TypeUrl,
					Resources: len(resp.Resources),
					Removed:   len(resp.RemovedResources),
					Bytes:     proto.Size(resp),
					Build:     built.Sub(start),
					Send:      sent.Sub(built),
					Waited:    sent.Sub(since),
				})
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errCh:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-c.wake:
		}
	}
}

func (s *Server) nextNonce() string {
	return strconv.FormatUint(s.nonce.Add(1), 10)
}

// errNoType is returned to a client that sends a request without a type.
var errNoType = status.Error(codes.InvalidArgument, "delta request without type_url")
