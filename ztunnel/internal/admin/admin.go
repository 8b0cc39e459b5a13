// Package admin serves ztunnel's operational endpoints: the admin port
// (config dump, log level), readiness, and metrics.
package admin

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/ztunnel/internal/ca"
	"github.com/ambient-mesh/mesh/ztunnel/internal/proxy"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

// Sources are what the admin endpoints read.
type Sources struct {
	Store *state.Store
	Certs func() []*ca.Certificate
	Proxy *proxy.Proxy
	Level *slog.LevelVar
	// Ready reports readiness and, when not ready, why.
	Ready func() (bool, string)
}

// CertInfo is a certificate as the dump shows it: public parts only.
type CertInfo struct {
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Chain     []string  `json:"chain"` // PEM, leaf first
}

// Dump is the config dump.
type Dump struct {
	Workloads       map[string]json.RawMessage   `json:"workloads"`
	Services        map[string]json.RawMessage   `json:"services"`
	Policies        map[string]json.RawMessage   `json:"policies"`
	Certificates    []CertInfo                   `json:"certificates"`
	Pods            []proxy.PodInfo              `json:"pods"`
	Connections     []proxy.ConnInfo             `json:"connections"`
	ResourceVersion map[string]map[string]string `json:"resource_versions"`
}

// Admin returns the handler of the admin port (localhost only).
func Admin(s Sources) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		d, err := s.dump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d)
	})
	mux.HandleFunc("/logging", func(w http.ResponseWriter, r *http.Request) {
		if lv := r.URL.Query().Get("level"); lv != "" {
			if r.Method != http.MethodPost {
				http.Error(w, "set the level with POST", http.StatusMethodNotAllowed)
				return
			}
			var l slog.Level
			if err := l.UnmarshalText([]byte(lv)); err != nil {
				http.Error(w, fmt.Sprintf("level %q: want debug, info, warn or error", lv), http.StatusBadRequest)
				return
			}
			s.Level.Set(l)
		}
		fmt.Fprintf(w, "level: %s\n", strings.ToLower(s.Level.Level().String()))
	})
	mux.Handle("/healthz/ready", Readiness(s.Ready))
	return mux
}

// Readiness answers /healthz/ready: 200 once ready, 503 with the reason.
func Readiness(ready func() (bool, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		if !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
}

func (s Sources) dump() (*Dump, error) {
	snap := s.Store.Snapshot()
	d := &Dump{
		Workloads:       map[string]json.RawMessage{},
		Services:        map[string]json.RawMessage{},
		Policies:        map[string]json.RawMessage{},
		Pods:            s.Proxy.Pods(),
		Connections:     s.Proxy.Connections(),
		ResourceVersion: map[string]map[string]string{},
	}
	for _, t := range []string{state.AddressType, state.AuthorizationType} {
		d.ResourceVersion[t] = s.Store.Versions(t)
	}
	add := func(into map[string]json.RawMessage, name string, m proto.Message) error {
		b, err := protojson.Marshal(m)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		into[name] = b
		return nil
	}
	for name, w := range snap.Workloads {
		if err := add(d.Workloads, name, w); err != nil {
			return nil, err
		}
	}
	for name, svc := range snap.Services {
		if err := add(d.Services, name, svc); err != nil {
			return nil, err
		}
	}
	for name, p := range snap.Policies {
		if err := add(d.Policies, name, p); err != nil {
			return nil, err
		}
	}
	for _, c := range s.Certs() {
		info := CertInfo{Identity: c.Identity.String(), Serial: c.Leaf.SerialNumber.Text(16), NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter}
		// Certificates only: the key is never part of the dump.
		for _, der := range c.TLS.Certificate {
			info.Chain = append(info.Chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
		}
		d.Certificates = append(d.Certificates, info)
	}
	sort.Slice(d.Certificates, func(i, j int) bool { return d.Certificates[i].Identity < d.Certificates[j].Identity })
	return d, nil
}
