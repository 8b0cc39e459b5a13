package controlplane

import (
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

type adsService struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

// adsStream is one client's stream. Everything but wake is guarded by
// Server.mu.
type adsStream struct {
	node string
	// queue holds responses not yet sent; changes are queued under the lock
	// so each stream sees them in version order, and sent by the stream's
	// own goroutine so a slow client cannot block a setter.
	queue []*discovery.DeltaDiscoveryResponse
	wake  chan struct{} // capacity 1: the queue is not empty
	// subscribed, lastSent and lastAcked are keyed by type URL; the nonces
	// are those of the newest response queued and the newest ACKed.
	subscribed map[string]bool
	lastSent   map[string]string
	lastAcked  map[string]string
	// inflight maps nonces not yet answered to what their response carried.
	inflight map[string]sentResponse
}

type sentResponse struct {
	typeURL string
	names   []string
}

func (st *adsStream) syncedLocked() bool {
	for _, t := range types {
		if !st.subscribed[t] || st.lastAcked[t] != st.lastSent[t] {
			return false
		}
	}
	return true
}

func (a adsService) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	s := a.s
	ctx := stream.Context()
	st := &adsStream{
		wake:       make(chan struct{}, 1),
		subscribed: map[string]bool{},
		lastSent:   map[string]string{},
		lastAcked:  map[string]string{},
		inflight:   map[string]sentResponse{},
	}
	s.mu.Lock()
	s.streams[st] = struct{}{}
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.notifyLocked()
		s.mu.Unlock()
	}()

	// Recv blocks, so it gets its own goroutine; it ends when the stream's
	// context does, which gRPC cancels once this handler returns.
	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			s.handleRequest(st, req)
		case <-st.wake:
		}
		s.mu.Lock()
		queue := st.queue
		st.queue = nil
		s.mu.Unlock()
		for _, resp := range queue {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// handleRequest records an ACK or NACK, or answers a new subscription with
// the full state of its type. Only wildcard subscriptions exist here, so a
// request naming resources is treated as wildcard too.
func (s *Server) handleRequest(st *adsStream, req *discovery.DeltaDiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := req.GetNode().GetId(); id != "" {
		st.node = id
	}
	typeURL := req.GetTypeUrl()
	if nonce := req.GetResponseNonce(); nonce != "" {
		sent, known := st.inflight[nonce]
		delete(st.inflight, nonce)
		if known {
			typeURL = sent.typeURL
		}
		if detail := req.GetErrorDetail(); detail != nil {
			s.nacks = append(s.nacks, NACK{TypeURL: typeURL, Nonce: nonce, Names: sent.names, Message: detail.GetMessage(), Node: st.node})
			s.log.Warn("xds NACK", "node", st.node, "type", typeURL, "nonce", nonce, "resources", sent.names, "error", detail.GetMessage())
		} else if known && st.lastSent[typeURL] == nonce {
			// An ACK of an older response says nothing about the newer one.
			st.lastAcked[typeURL] = nonce
		}
		s.notifyLocked()
		return
	}
	if !slices.Contains(types, typeURL) {
		s.log.Warn("xds subscription to an unserved type ignored", "node", st.node, "type", typeURL)
		return
	}
	if st.subscribed[typeURL] {
		return // a repeated wildcard subscription changes nothing
	}
	st.subscribed[typeURL] = true
	// Send everything, even names the client says it holds at the same
	// version: simpler, and correct across Server instances whose version
	// counters coincide. Names it holds that are gone are removed, so a
	// client resuming after an outage does not keep stale config.
	resp := &discovery.DeltaDiscoveryResponse{}
	current := s.resources[typeURL]
	for _, name := range slices.Sorted(maps.Keys(current)) {
		r := current[name]
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: name, Version: r.version, Resource: r.body})
	}
	for _, name := range slices.Sorted(maps.Keys(req.GetInitialResourceVersions())) {
		if _, ok := current[name]; !ok {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	s.enqueueLocked(st, typeURL, resp)
	s.log.Debug("xds subscribed", "node", st.node, "type", typeURL, "resources", len(resp.Resources), "removed", len(resp.RemovedResources))
}

// update stores body under typeURL/name, or removes the name if body is
// nil, and pushes the delta to every stream subscribed to the type.
func (s *Server) update(typeURL, name string, body *anypb.Any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	current := s.resources[typeURL]
	if current == nil {
		current = map[string]resource{}
		s.resources[typeURL] = current
	}
	if _, ok := current[name]; body == nil && !ok {
		return
	}
	s.version++
	version := strconv.FormatUint(s.version, 10)
	if body == nil {
		delete(current, name)
	} else {
		current[name] = resource{version: version, body: body}
	}
	for st := range s.streams {
		if !st.subscribed[typeURL] {
			continue
		}
		resp := &discovery.DeltaDiscoveryResponse{}
		if body == nil {
			resp.RemovedResources = []string{name}
		} else {
			// The body is shared between streams; gRPC only reads it.
			resp.Resources = []*discovery.Resource{{Name: name, Version: version, Resource: body}}
		}
		s.enqueueLocked(st, typeURL, resp)
	}
}

func (s *Server) enqueueLocked(st *adsStream, typeURL string, resp *discovery.DeltaDiscoveryResponse) {
	s.nonce++
	resp.TypeUrl = typeURL
	resp.Nonce = strconv.FormatUint(s.nonce, 10)
	resp.SystemVersionInfo = strconv.FormatUint(s.version, 10)
	names := slices.Clone(resp.RemovedResources)
	for _, r := range resp.Resources {
		names = append(names, r.GetName())
	}
	st.inflight[resp.Nonce] = sentResponse{typeURL: typeURL, names: names}
	st.lastSent[typeURL] = resp.Nonce
	st.queue = append(st.queue, resp)
	select {
	case st.wake <- struct{}{}:
	default:
	}
	s.notifyLocked()
}
