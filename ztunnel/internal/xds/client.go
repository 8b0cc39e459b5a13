package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ambient-mesh/mesh/pkg/rpc"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// Reconnect backoff bounds.
const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Client keeps a Store in sync with istiod.
type Client struct {
	Conn  *rpc.Conn
	Node  *xdsapi.Node
	Store *state.Store
	Log   *slog.Logger
	// OnSynced, if set, is called after the first response of each type on
	// a stream has been applied (for readiness).
	OnSynced func(typeURL string)
	// Token, if set, returns ztunnel's ServiceAccount token, sent as a
	// bearer token when each stream opens: Istio's istiod authenticates
	// xDS clients on 15012. It is read per stream because the kubelet
	// rotates it. Leave it unset on a plaintext connection.
	Token func() (string, error)
}

// Types are the resource types ztunnel subscribes to, in subscription order.
var Types = []string{state.AddressType, state.AuthorizationType}

// Run keeps a stream open until ctx ends.
func (c *Client) Run(ctx context.Context) {
	backoff := minBackoff
	for {
		received, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if received {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.Log.Warn("xds stream ended; serving the last good state", "error", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// session runs one stream; received reports whether any response came.
func (c *Client) session(ctx context.Context) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var md rpc.Metadata
	if c.Token != nil {
		token, err := c.Token()
		if err != nil {
			return false, fmt.Errorf("read token: %w", err)
		}
		md = rpc.Metadata{"authorization": "Bearer " + token}
	}
	stream, err := c.Conn.NewStream(ctx, xdsapi.DeltaADSMethod, md)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	defer stream.Close()
	for i, t := range Types {
		req := &xdsapi.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: c.Store.Versions(t)}
		if i == 0 {
			req.Node = c.Node
		}
		if err := send(stream, req); err != nil {
			return false, fmt.Errorf("subscribe %s: %w", t, err)
		}
	}
	synced := map[string]bool{}
	for {
		resp := &xdsapi.DeltaDiscoveryResponse{}
		if err := stream.Recv(resp); err != nil {
			return received, err
		}
		received = true
		ack := &xdsapi.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if applyErr := c.apply(resp); applyErr != nil {
			c.Log.Error("rejected xds resources", "type", resp.GetTypeUrl(), "nonce", resp.GetNonce(), "error", applyErr)
			ack.ErrorDetail = &xdsapi.Status{Code: int32(rpc.InvalidArgument), Message: applyErr.Error()}
		}
		if err := send(stream, ack); err != nil {
			return received, err
		}
		if !synced[resp.GetTypeUrl()] {
			synced[resp.GetTypeUrl()] = true
			if c.OnSynced != nil {
				c.OnSynced(resp.GetTypeUrl())
			}
		}
	}
}

// send sends req; if istiod has ended the stream, the error is how it
// ended it.
func send(stream *rpc.Stream, req *xdsapi.DeltaDiscoveryRequest) error {
	err := stream.Send(req)
	for errors.Is(err, io.EOF) {
		err = stream.Recv(&xdsapi.DeltaDiscoveryResponse{})
		if err == nil {
			continue // a response sent before the end: the status follows
		}
		if errors.Is(err, io.EOF) {
			return errors.New("istiod ended the stream")
		}
	}
	return err
}

func (c *Client) apply(resp *xdsapi.DeltaDiscoveryResponse) error {
	var errs []error
	updated := make([]state.Resource, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		switch body := r.GetResource(); {
		case body == nil:
			errs = append(errs, fmt.Errorf("%s: resource without a body", r.GetName()))
		case body.GetTypeUrl() != resp.GetTypeUrl():
			errs = append(errs, fmt.Errorf("%s: body of type %s in a %s response", r.GetName(), body.GetTypeUrl(), resp.GetTypeUrl()))
		default:
			updated = append(updated, state.Resource{Name: r.GetName(), Version: r.GetVersion(), Body: body})
		}
	}
	if err := c.Store.Apply(resp.GetTypeUrl(), updated, resp.GetRemovedResources()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
