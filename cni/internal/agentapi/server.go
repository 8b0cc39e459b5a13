package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

// Agent is what the node agent implements to serve the plugin.
type Agent interface {
	// PodAdded enrolls the pod if it should be, and returns after ztunnel
	// acked it. An error fails the pod's sandbox creation; the kubelet retries.
	PodAdded(ctx context.Context, req PodAdded) (AddResult, error)
	// PodDeleted forgets the sandbox. Errors are logged by the plugin only.
	PodDeleted(ctx context.Context, req PodDeleted) error
	// Status returns nil when the agent can enroll pods.
	Status(ctx context.Context) error
}

// Handler serves the plugin API on top of an Agent.
func Handler(a Agent) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+AddPath, func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodePodAdded(r.Body)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorResult{Error: err.Error()})
			return
		}
		res, err := a.PodAdded(r.Context(), req)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, ErrorResult{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST "+DelPath, func(w http.ResponseWriter, r *http.Request) {
		req, err := DecodePodDeleted(r.Body)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorResult{Error: err.Error()})
			return
		}
		if err := a.PodDeleted(r.Context(), req); err != nil {
			writeJSON(w, http.StatusInternalServerError, ErrorResult{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, r *http.Request) {
		if err := a.Status(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, StatusResult{Reason: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, StatusResult{Ready: true})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Listen creates the run dir and listens on the socket at path, replacing a
// socket left behind by a previous agent. Only root may connect.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create agent run dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale agent socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on agent socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict agent socket %s: %w", path, err)
	}
	return ln, nil
}
