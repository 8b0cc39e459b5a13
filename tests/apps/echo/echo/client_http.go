package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
)

// maxReplyBytes bounds how much of a response body is read.
const maxReplyBytes = 1 << 20

type httpRequester struct {
	url          string
	host         string
	header       http.Header
	expectStatus int
	h2c          bool
	shared       *http.Transport // nil unless keep-alive
}

func newHTTPRequester(u *url.URL, cfg ClientConfig) *httpRequester {
	target := *u
	target.Scheme = "http" // h2c is plain http on the wire
	header := cfg.Headers.Clone()
	if header == nil {
		header = http.Header{}
	}
	// net/http ignores a Host header field; the request's Host carries it.
	host := header.Get("Host")
	header.Del("Host")
	h := &httpRequester{
		url:          target.String(),
		host:         host,
		header:       header,
		expectStatus: cfg.ExpectStatus,
		h2c:          u.Scheme == SchemeH2C,
	}
	if cfg.KeepAlive {
		h.shared = h.transport()
	}
	return h
}

// transport speaks exactly one protocol, so a server that cannot do h2c
// fails the request instead of being silently downgraded.
func (h *httpRequester) transport() *http.Transport {
	var p http.Protocols
	if h.h2c {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	// The zero Transport uses no proxy, which is what a mesh test wants
	// whatever the pod's environment says. Without compression the server
	// sees only the headers the user asked for (and User-Agent).
	return &http.Transport{Protocols: &p, DisableCompression: true}
}

func (h *httpRequester) do(ctx context.Context) (Reply, error) {
	t := h.shared
	if t == nil {
		t = h.transport()
		defer t.CloseIdleConnections()
	}
	var mu sync.Mutex
	var local string
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			mu.Lock()
			defer mu.Unlock()
			local = info.Conn.LocalAddr().String()
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return Reply{}, fmt.Errorf("build request: %w", err)
	}
	req.Header = h.header.Clone()
	if h.host != "" {
		req.Host = h.host
	}
	// RoundTrip rather than http.Client: redirects are answers to report,
	// not to follow.
	resp, err := t.RoundTrip(req)
	if err != nil {
		return Reply{}, fmt.Errorf("http request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return Reply{}, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != h.expectStatus {
		return Reply{}, fmt.Errorf("unexpected status %d, want %d", resp.StatusCode, h.expectStatus)
	}
	var reply Reply
	if err := json.Unmarshal(body, &reply); err != nil {
		if resp.StatusCode < 300 {
			return Reply{}, fmt.Errorf("decode reply: %w", err)
		}
		// An expected error status may come from a proxy (fault injection,
		// no route) rather than from echo: it has no reply to decode.
		reply = Reply{}
	}
	mu.Lock()
	reply.LocalAddr = local
	mu.Unlock()
	return reply, nil
}

func (h *httpRequester) close() {
	if h.shared != nil {
		h.shared.CloseIdleConnections()
	}
}
