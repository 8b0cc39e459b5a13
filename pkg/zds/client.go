package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/ambient-mesh/mesh/pkg/zdsapi"
)

// Handler applies one request from the node agent; its error is sent back
// as the Ack's error. For an AddWorkload, netns is the pod's network
// namespace and belongs to the handler, which must close it (at once, or
// when the pod is deleted); it is nil for other requests.
type Handler func(ctx context.Context, req *zdsapi.WorkloadRequest, netns *os.File) error

// Client is ztunnel's end of ZDS.
type Client struct {
	// Path of the agent's socket; DefaultSocketPath if empty.
	Path string
	// Handle is called for each valid request, one at a time.
	Handle Handler
	// Logger; nothing is logged if nil.
	Logger *slog.Logger
	// OnConnect, if set, is called once the hello is sent.
	OnConnect func()
}

// Run connects, says hello and serves requests until ctx ends (it then
// returns nil) or the connection fails. Reconnecting, and the backoff
// between attempts, is the caller's choice.
func (c *Client) Run(ctx context.Context) error {
	path := c.Path
	if path == "" {
		path = DefaultSocketPath
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := Dial(ctx, path)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.WriteHello(ctx); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	if c.OnConnect != nil {
		c.OnConnect()
	}
	for {
		req, netns, err := conn.ReadRequest(ctx)
		ack := &zdsapi.Ack{}
		switch {
		case errors.Is(err, ErrInvalidMessage):
			// Still answer: the agent waits for an Ack to every packet.
			log.Warn("rejected zds request", "err", err)
			ack.Error = err.Error()
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return err
		default:
			if herr := c.Handle(ctx, req, netns); herr != nil {
				ack.Error = herr.Error()
			}
		}
		resp := &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: ack}}
		if err := conn.WriteResponse(ctx, resp); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
