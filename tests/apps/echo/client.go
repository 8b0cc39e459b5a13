package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
)

func client(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("echo client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg echo.ClientConfig
	headers := headerFlag{}
	fs.StringVar(&cfg.URL, "url", "", "target; the scheme picks the protocol: http://host:port/path (HTTP/1.1), h2c://host:port/path (HTTP/2 cleartext), grpc://host:port, tcp://host:port")
	fs.IntVar(&cfg.Count, "count", 1, "number of requests")
	fs.IntVar(&cfg.Concurrency, "concurrency", 1, "requests in flight at once")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each request, connecting included")
	fs.Var(headers, "header", "header to send as `K:V`, repeatable (http/h2c headers, grpc metadata; Host sets the host or authority)")
	fs.StringVar(&cfg.Message, "message", "hello", "payload that tcp and grpc send and expect echoed back")
	fs.IntVar(&cfg.ExpectStatus, "expect-status", http.StatusOK, "HTTP status that counts as success (http, h2c)")
	fs.BoolVar(&cfg.KeepAlive, "keepalive", false, "reuse connections across requests (http, h2c, grpc); by default each request dials anew")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if len(headers) > 0 {
		cfg.Headers = http.Header(headers)
	}

	c, err := echo.NewClient(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "echo client: %v\n", err)
		return exitUsage
	}
	defer c.Close()
	sum := c.Run(ctx)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(sum); err != nil {
		fmt.Fprintf(stderr, "echo client: write summary: %v\n", err)
		return exitFailed
	}
	if sum.Errors > 0 {
		return exitFailed
	}
	return exitOK
}

// headerFlag collects repeated --header K:V flags.
type headerFlag http.Header

func (h headerFlag) String() string {
	var parts []string
	for k, vs := range h {
		for _, v := range vs {
			parts = append(parts, k+":"+v)
		}
	}
	return strings.Join(parts, ",")
}

func (h headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("header %q: want K:V", s)
	}
	http.Header(h).Add(k, strings.TrimSpace(v))
	return nil
}
