package adsclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/xdsapi"
)

// The types a ztunnel subscribes to, in its order.
const (
	AddressType       = "type.googleapis.com/istio.workload.Address"
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// DefaultMaxRecvMsgSize bounds one response. gRPC's own default (4 MiB) is
// smaller than a control plane's first response can be at scale, and a
// benchmark should measure that response, not fail on it.
const DefaultMaxRecvMsgSize = 256 << 20

// ErrClosed is what Err reports after Close.
var ErrClosed = errors.New("adsclient: closed")

// Options configure a Client.
type Options struct {
	// NodeID is sent in the first request, e.g. "ztunnel~10.0.0.1~x~y".
	NodeID string
	// Types are subscribed wildcard, in this order. At least one.
	Types []string
	// Validate, if set, checks each resource of a response; an error
	// NACKs the whole response, which is then not recorded as holding.
	Validate func(typeURL string, r *xdsapi.Resource) error
	// MaxRecvMsgSize bounds one response; DefaultMaxRecvMsgSize if zero.
	MaxRecvMsgSize int
}

// Resource is what the client knows of one resource name.
type Resource struct {
	TypeURL string
	Name    string
	Version string     // of the latest arrival
	Body    *anypb.Any // of the latest arrival; nil once removed
	// FirstArrived is when a response first carried the resource, and
	// LastArrived when one last did. Updates counts those responses.
	FirstArrived time.Time
	LastArrived  time.Time
	Updates      int
	// Removed is when a response last removed the name, zero if it is
	// held now.
	Removed time.Time
}

// Held reports whether the client holds the resource now.
func (r Resource) Held() bool { return r.Removed.IsZero() }

// Response is the record of one response.
type Response struct {
	Arrived time.Time
	TypeURL string
	Nonce   string
	// Size is the response's protobuf encoding in bytes: what the stream
	// carried, less gRPC's 5-byte message header.
	Size      int
	Resources []string // names updated, in the response's order
	Removed   []string
	// NACKed is set when Validate rejected the response.
	NACKed bool
}

type typeKey struct{ typeURL, name string }

// Client is one Delta ADS stream. Create it with Start; Close it.
type Client struct {
	opts   Options
	stream grpc.ClientStream
	cancel context.CancelFunc
	done   chan struct{} // closed when the receive loop ends

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every response and at the end
	resources map[typeKey]*Resource
	held      map[string]int // per type URL
	responses []Response
	synced    map[string]bool // types that had their first response
	err       error           // why the stream ended
}

// Start opens a DeltaAggregatedResources stream on cc, subscribes to
// opts.Types and records responses until ctx ends or Close is called.
func Start(ctx context.Context, cc grpc.ClientConnInterface, opts Options) (*Client, error) {
	if len(opts.Types) == 0 {
		return nil, errors.New("adsclient: no types to subscribe to")
	}
	if opts.MaxRecvMsgSize == 0 {
		opts.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	ctx, cancel := context.WithCancel(ctx)
	desc := &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}
	stream, err := cc.NewStream(ctx, desc, xdsapi.DeltaADSMethod, grpc.MaxCallRecvMsgSize(opts.MaxRecvMsgSize))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("adsclient: open stream: %w", err)
	}
	c := &Client{
		opts:      opts,
		stream:    stream,
		cancel:    cancel,
		done:      make(chan struct{}),
		changed:   make(chan struct{}),
		resources: map[typeKey]*Resource{},
		held:      map[string]int{},
		synced:    map[string]bool{},
	}
	// Subscriptions are sent before the receive loop starts, so that only
	// one goroutine ever sends on the stream.
	for i, t := range opts.Types {
		req := &xdsapi.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: []string{"*"}}
		if i == 0 {
			req.Node = &xdsapi.Node{Id: opts.NodeID}
		}
		if err := stream.SendMsg(req); err != nil {
			cancel()
			return nil, fmt.Errorf("adsclient: subscribe to %s: %w", t, err)
		}
	}
	go c.receive()
	return c, nil
}

func (c *Client) receive() {
	defer close(c.done)
	for {
		resp := &xdsapi.DeltaDiscoveryResponse{}
		err := c.stream.RecvMsg(resp)
		now := time.Now()
		if err != nil {
			c.finish(err)
			return
		}
		nack := c.validate(resp)
		c.record(resp, now, nack != nil)
		ack := &xdsapi.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if nack != nil {
			ack.ErrorDetail = &xdsapi.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
		}
		// A failed send means the stream is gone; the next receive says
		// why, with the server's status rather than a bare EOF.
		_ = c.stream.SendMsg(ack)
	}
}

func (c *Client) validate(resp *xdsapi.DeltaDiscoveryResponse) error {
	if c.opts.Validate == nil {
		return nil
	}
	var errs []string
	for _, r := range resp.GetResources() {
		if err := c.opts.Validate(resp.GetTypeUrl(), r); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", r.GetName(), err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

func (c *Client) record(resp *xdsapi.DeltaDiscoveryResponse, now time.Time, nacked bool) {
	t := resp.GetTypeUrl()
	rec := Response{
		Arrived:   now,
		TypeURL:   t,
		Nonce:     resp.GetNonce(),
		Size:      proto.Size(resp),
		Resources: make([]string, 0, len(resp.GetResources())),
		Removed:   slices.Clone(resp.GetRemovedResources()),
		NACKed:    nacked,
	}
	for _, r := range resp.GetResources() {
		rec.Resources = append(rec.Resources, r.GetName())
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.responses = append(c.responses, rec)
	c.synced[t] = true
	if !nacked {
		for _, r := range resp.GetResources() {
			k := typeKey{t, r.GetName()}
			res := c.resources[k]
			if res == nil {
				res = &Resource{TypeURL: t, Name: r.GetName(), FirstArrived: now}
				c.resources[k] = res
			}
			if !res.Held() || res.Updates == 0 {
				c.held[t]++
			}
			res.Version, res.Body, res.LastArrived, res.Removed = r.GetVersion(), r.GetResource(), now, time.Time{}
			res.Updates++
		}
		for _, n := range resp.GetRemovedResources() {
			if res := c.resources[typeKey{t, n}]; res != nil && res.Held() {
				res.Removed, res.Body = now, nil
				c.held[t]--
			}
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) finish(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// Close ends the stream and waits for the receive loop. It returns nil
// unless the stream had already failed, in which case it returns why.
func (c *Client) Close() error {
	c.mu.Lock()
	prior := c.err
	if prior == nil {
		c.err = ErrClosed
	}
	c.mu.Unlock()
	c.cancel()
	<-c.done
	if prior != nil && status.Code(prior) != codes.Canceled {
		return prior
	}
	return nil
}

// Err is why the stream ended, nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Wait calls cond after every response until it returns true, the stream
// ends or ctx does. cond runs without the client's lock, so it may call the
// client's read methods.
func (c *Client) Wait(ctx context.Context, cond func() bool) error {
	for {
		c.mu.Lock()
		ch, err := c.changed, c.err
		c.mu.Unlock()
		if cond() {
			return nil
		}
		if err != nil {
			return fmt.Errorf("adsclient: stream ended: %w", err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitSynced waits for the first response of every subscribed type: the
// client then holds the server's state as of its subscription.
func (c *Client) WaitSynced(ctx context.Context) error {
	return c.Wait(ctx, c.Synced)
}

// Synced reports whether every subscribed type has had a response.
func (c *Client) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.opts.Types {
		if !c.synced[t] {
			return false
		}
	}
	return true
}

// Resource returns the record of one name, ok false if it never arrived.
func (c *Client) Resource(typeURL, name string) (r Resource, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := c.resources[typeKey{typeURL, name}]
	if res == nil {
		return Resource{}, false
	}
	return *res, true
}

// Held is the number of resources of typeURL the client holds now.
func (c *Client) Held(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[typeURL]
}

// ResponseCount is how many responses have arrived.
func (c *Client) ResponseCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.responses)
}

// Responses returns the records of the responses from index from on (0 for
// all), oldest first. A caller that remembers from+len(result) reads each
// response once however many arrive.
func (c *Client) Responses(from int) []Response {
	c.mu.Lock()
	defer c.mu.Unlock()
	if from >= len(c.responses) {
		return nil
	}
	// Records are never modified after they are appended, so a shallow
	// copy of the slice is safe to hand out.
	return slices.Clone(c.responses[max(from, 0):])
}
