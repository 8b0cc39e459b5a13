package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrUnreachable marks failures to reach the node agent at all, as opposed
// to an answer that reports an error.
var ErrUnreachable = errors.New("node agent unreachable")

// Client calls the node agent. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket. Deadlines
// come from the contexts passed to each call.
func NewClient(socket string) *Client {
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		},
		// The plugin makes one or two calls per process: no pooling.
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: transport}}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// PodAdded asks the agent to enroll the pod. It returns once the agent
// answered: for an enrolled pod, after ztunnel acked it.
func (c *Client) PodAdded(ctx context.Context, req PodAdded) (AddResult, error) {
	var res AddResult
	err := c.do(ctx, http.MethodPost, AddPath, req, &res)
	return res, err
}

// PodDeleted tells the agent a pod sandbox is going away.
func (c *Client) PodDeleted(ctx context.Context, req PodDeleted) error {
	return c.do(ctx, http.MethodPost, DelPath, req, nil)
}

// Status returns nil when the agent answers that it is ready.
func (c *Client) Status(ctx context.Context) error {
	var res StatusResult
	if err := c.do(ctx, http.MethodGet, StatusPath, nil, &res); err != nil {
		return err
	}
	if !res.Ready {
		return fmt.Errorf("node agent at %s not ready: %s", c.socket, res.Reason)
	}
	return nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	// The host part is never resolved: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			// Reached or not, the agent did not answer before the deadline;
			// for an add that usually means ztunnel has not acked yet.
			return fmt.Errorf("node agent at %s: no answer to %s %s in time: %w", c.socket, method, path, ctx.Err())
		}
		return fmt.Errorf("%w at unix socket %s: %w", ErrUnreachable, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return fmt.Errorf("read answer from node agent at %s: %w", c.socket, err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResult
		msg := string(bytes.TrimSpace(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if msg == "" {
			msg = resp.Status
		}
		return fmt.Errorf("node agent at %s answered %s %s: %d: %s", c.socket, method, path, resp.StatusCode, msg)
	}
	// An empty 200 is a bare success (Istio's agent answers adds that way).
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer from node agent at %s: %w", c.socket, err)
		}
	}
	return nil
}
