package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Client schemes, also reported as [Summary.Protocol].
const (
	SchemeHTTP = "http" // HTTP/1.1
	SchemeH2C  = "h2c"  // HTTP/2 cleartext with prior knowledge
	SchemeGRPC = "grpc"
	SchemeTCP  = "tcp"
)

// ClientConfig says what a [Client] sends.
type ClientConfig struct {
	// URL is the target; its scheme picks the protocol: http://host:port/path,
	// h2c://host:port/path, grpc://host:port or tcp://host:port.
	URL         string
	Count       int
	Concurrency int
	// Timeout bounds each request, connection set-up included.
	Timeout time.Duration
	// Headers go out as HTTP headers, or as gRPC metadata; Host sets the
	// HTTP host or gRPC authority. Not allowed for tcp.
	Headers http.Header
	// Message is the payload tcp and grpc send and expect echoed back.
	Message string
	// ExpectStatus is the HTTP status that counts as success (http, h2c).
	ExpectStatus int
	// KeepAlive reuses connections across requests; without it every
	// request dials anew so that load balancing across replicas shows.
	KeepAlive bool
}

// Client sends a batch of requests to one target.
type Client struct {
	cfg    ClientConfig
	scheme string
	req    requester
}

// requester makes one request of a given protocol and reports the reply.
type requester interface {
	do(ctx context.Context) (Reply, error)
	close()
}

// NewClient checks cfg; an error means the configuration itself is wrong.
// Close the Client when done.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Count < 1 {
		return nil, fmt.Errorf("count %d: want at least 1", cfg.Count)
	}
	if cfg.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency %d: want at least 1", cfg.Concurrency)
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("timeout %s: want a positive duration", cfg.Timeout)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("url %q: want scheme://host:port", cfg.URL)
	}
	var req requester
	switch u.Scheme {
	case SchemeHTTP, SchemeH2C:
		if cfg.ExpectStatus < 100 || cfg.ExpectStatus > 599 {
			return nil, fmt.Errorf("expect-status %d: want 100..599", cfg.ExpectStatus)
		}
		req = newHTTPRequester(u, cfg)
	case SchemeGRPC, SchemeTCP:
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return nil, fmt.Errorf("url %q: want %s://host:port: %w", cfg.URL, u.Scheme, err)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("url %q: %s takes no path", cfg.URL, u.Scheme)
		}
		if u.Scheme == SchemeTCP {
			if len(cfg.Headers) > 0 {
				return nil, errors.New("headers do not apply to tcp")
			}
			req = &tcpRequester{addr: u.Host, message: cfg.Message}
		} else {
			req, err = newGRPCRequester(u.Host, cfg)
			if err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("url %q: scheme must be http, h2c, grpc or tcp", cfg.URL)
	}
	return &Client{cfg: cfg, scheme: u.Scheme, req: req}, nil
}

// Close releases connections kept for --keepalive.
func (c *Client) Close() { c.req.close() }

// result is the outcome of one request.
type result struct {
	latency time.Duration
	reply   Reply
	err     error
}

// Run sends Count requests, Concurrency at a time, and summarises them. It
// always sends them all; once ctx is done the rest fail at once.
func (c *Client) Run(ctx context.Context) *Summary {
	results := make([]result, c.cfg.Count)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(c.cfg.Concurrency, c.cfg.Count) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(results) {
					return
				}
				results[i] = c.once(ctx)
			}
		})
	}
	wg.Wait()
	return summarize(c.cfg.URL, c.scheme, results)
}

func (c *Client) once(ctx context.Context) result {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	reply, err := c.req.do(ctx)
	return result{latency: time.Since(start), reply: reply, err: err}
}
