package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// MaxDelay bounds the ?delay= query so a typo cannot park a request for hours.
const MaxDelay = 30 * time.Second

type httpServer struct {
	ln  net.Listener
	srv *http.Server
}

// newHTTPServer serves HTTP/1.1 and h2c with prior knowledge on one port.
// net/http's own unencrypted HTTP/2 is used rather than the deprecated
// x/net/http2/h2c; it does not implement the "Upgrade: h2c" dance (which RFC
// 9113 deprecated), so such a request is simply answered over HTTP/1.1.
func newHTTPServer(ln net.Listener, id Identity, log *slog.Logger) *httpServer {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &httpServer{
		ln: ln,
		srv: &http.Server{
			Handler:           &httpHandler{id: id, log: log},
			Protocols:         &protocols,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
}

func (h *httpServer) serve() error {
	if err := h.srv.Serve(h.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

func (h *httpServer) shutdown(ctx context.Context) {
	if err := h.srv.Shutdown(ctx); err != nil {
		// Drain timed out: cut the stragglers, which also cancels their
		// request contexts so delayed handlers return.
		h.srv.Close()
	}
}

// httpHandler answers every path with a JSON Reply, except /healthz.
// It deliberately is not a ServeMux, which would redirect unclean paths
// instead of reporting them as received.
type httpHandler struct {
	id  Identity
	log *slog.Logger
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.URL.Path == "/healthz" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ok")
		// Probes arrive every few seconds; keep them out of the normal log.
		h.log.Debug("http health check", "client", r.RemoteAddr)
		return
	}
	status, delay, err := parseQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		h.logRequest(r, http.StatusBadRequest, start, err)
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			h.logRequest(r, 0, start, r.Context().Err())
			return
		}
	}

	reply := Reply{
		Pod:        h.id.Pod,
		Namespace:  h.id.Namespace,
		Version:    h.id.Version,
		Protocol:   r.Proto,
		Method:     r.Method,
		Host:       r.Host,
		Path:       r.URL.Path,
		ClientAddr: r.RemoteAddr,
		Headers:    r.Header.Clone(),
	}
	if reply.Headers == nil {
		reply.Headers = map[string][]string{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status != http.StatusNoContent && status != http.StatusNotModified {
		if err := json.NewEncoder(w).Encode(reply); err != nil {
			h.logRequest(r, status, start, fmt.Errorf("write reply: %w", err))
			return
		}
	}
	h.logRequest(r, status, start, nil)
}

func (h *httpHandler) logRequest(r *http.Request, status int, start time.Time, err error) {
	attrs := []any{
		"client", r.RemoteAddr,
		"proto", r.Proto,
		"method", r.Method,
		"host", r.Host,
		"path", r.URL.Path,
		"status", status,
		"durationMs", millis(time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	h.log.Info("http request", attrs...)
}

// parseQuery reads the fault-test knobs ?status=NNN and ?delay=DURATION.
func parseQuery(q url.Values) (status int, delay time.Duration, err error) {
	status = http.StatusOK
	if s := q.Get("status"); s != "" {
		status, err = strconv.Atoi(s)
		// 1xx are not final answers and cannot carry the reply.
		if err != nil || status < 200 || status > 599 {
			return 0, 0, fmt.Errorf("status %q: want an integer in 200..599", s)
		}
	}
	if s := q.Get("delay"); s != "" {
		delay, err = time.ParseDuration(s)
		if err != nil || delay < 0 || delay > MaxDelay {
			return 0, 0, fmt.Errorf("delay %q: want a duration in 0..%s", s, MaxDelay)
		}
	}
	return status, delay, nil
}
