package monitoring

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
)

// connectionsJSON is the body of /debug/connections.
type connectionsJSON struct {
	Connections []connectionJSON `json:"connections"`
}

type connectionJSON struct {
	ID           uint64     `json:"id"`
	Node         string     `json:"node"`
	Peer         string     `json:"peer,omitempty"`
	ProxyVersion string     `json:"proxy_version,omitempty"`
	ConnectedAt  time.Time  `json:"connected_at"`
	Types        []typeJSON `json:"types"`
}

type typeJSON struct {
	Type     string   `json:"type"`
	Wildcard bool     `json:"wildcard"`
	Names    []string `json:"names,omitempty"` // explicit subscriptions
	// Resources is how many the client holds, as far as istiod knows.
	Resources      int       `json:"resources"`
	Responses      int       `json:"responses"`
	ResourcesSent  int       `json:"resources_sent"`
	LastSentNonce  string    `json:"last_sent_nonce,omitempty"`
	LastSentAt     time.Time `json:"last_sent_at,omitzero"`
	AwaitingACK    bool      `json:"awaiting_ack"`
	PendingNames   int       `json:"pending_names"`
	LastACKedNonce string    `json:"last_acked_nonce,omitempty"`
	LastACKedAt    time.Time `json:"last_acked_at,omitzero"`
	NACKs          int       `json:"nacks"`
	LastNACKNonce  string    `json:"last_nack_nonce,omitempty"`
	LastNACK       string    `json:"last_nack,omitempty"`
}

// synczJSON is the body of /debug/syncz.
type synczJSON struct {
	Proxies []proxySyncJSON `json:"proxies"`
}

type proxySyncJSON struct {
	ID    uint64         `json:"id"`
	Node  string         `json:"node"`
	Types []typeSyncJSON `json:"types"`
}

type typeSyncJSON struct {
	Type        string `json:"type"`
	Status      string `json:"status"`
	SentNonce   string `json:"sent_nonce,omitempty"`
	AckedNonce  string `json:"acked_nonce,omitempty"`
	NACKedNonce string `json:"nacked_nonce,omitempty"`
	NACK        string `json:"nack,omitempty"`
}

// Sync statuses, as istioctl proxy-status words them, plus NACKED.
const (
	statusSynced  = "SYNCED"   // the last response sent was ACKed
	statusStale   = "STALE"    // the last response sent awaits its ACK
	statusNACKed  = "NACKED"   // the last response sent was rejected
	statusNotSent = "NOT SENT" // subscribed, nothing sent yet
)

func syncStatus(ti ads.TypeInfo) string {
	switch {
	case ti.LastSentNonce == "":
		return statusNotSent
	case ti.LastNACKNonce == ti.LastSentNonce:
		return statusNACKed
	case ti.AwaitingACK || ti.LastACKedNonce != ti.LastSentNonce:
		return statusStale
	default:
		return statusSynced
	}
}

// configDumpJSON is the body of /debug/config_dump.
type configDumpJSON struct {
	Proxies []proxyDumpJSON `json:"proxies"`
}

type proxyDumpJSON struct {
	ID    uint64         `json:"id"`
	Node  string         `json:"node"`
	Types []typeDumpJSON `json:"types"`
}

type typeDumpJSON struct {
	Type      string             `json:"type"`
	Resources []resourceDumpJSON `json:"resources"`
}

type resourceDumpJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Resource is the body, when asked for and the cache still holds that
	// version; Note says why it is missing otherwise.
	Resource json.RawMessage `json:"resource,omitempty"`
	Note     string          `json:"note,omitempty"`
}

func (m *Monitor) connections(w http.ResponseWriter, _ *http.Request) {
	out := connectionsJSON{Connections: []connectionJSON{}}
	for _, ci := range m.src.ADS.Connections() {
		cj := connectionJSON{
			ID: ci.ID, Node: ci.NodeID, Peer: ci.PeerAddr, ProxyVersion: ci.ProxyVersion,
			ConnectedAt: ci.ConnectedAt, Types: []typeJSON{},
		}
		for _, ti := range ci.Types {
			cj.Types = append(cj.Types, typeJSON{
				Type: ti.TypeURL, Wildcard: ti.Wildcard, Names: ti.Names,
				Resources: ti.Resources, Responses: ti.Responses, ResourcesSent: ti.ResourcesSent,
				LastSentNonce: ti.LastSentNonce, LastSentAt: ti.LastSentAt,
				AwaitingACK: ti.AwaitingACK, PendingNames: ti.PendingNames,
				LastACKedNonce: ti.LastACKedNonce, LastACKedAt: ti.LastACKedAt,
				NACKs: ti.NACKs, LastNACKNonce: ti.LastNACKNonce, LastNACK: ti.LastNACK,
			})
		}
		out.Connections = append(out.Connections, cj)
	}
	m.writeJSON(w, http.StatusOK, out)
}

func (m *Monitor) syncz(w http.ResponseWriter, _ *http.Request) {
	out := synczJSON{Proxies: []proxySyncJSON{}}
	for _, ci := range m.src.ADS.Connections() {
		p := proxySyncJSON{ID: ci.ID, Node: ci.NodeID, Types: []typeSyncJSON{}}
		for _, ti := range ci.Types {
			ts := typeSyncJSON{Type: ti.TypeURL, Status: syncStatus(ti), SentNonce: ti.LastSentNonce, AckedNonce: ti.LastACKedNonce}
			if ti.NACKs > 0 {
				ts.NACKedNonce, ts.NACK = ti.LastNACKNonce, ti.LastNACK
			}
			p.Types = append(p.Types, ts)
		}
		out.Proxies = append(out.Proxies, p)
	}
	m.writeJSON(w, http.StatusOK, out)
}

// configDump shows what the proxy named by proxyID (a node id, or a
// connection id from /debug/connections) was sent: names and versions per
// type, and the bodies too with resources=true. A node id may match more
// than one stream, as while a proxy reconnects.
func (m *Monitor) configDump(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	proxyID := q.Get("proxyID")
	if proxyID == "" {
		m.writeError(w, http.StatusBadRequest, "proxyID is required: a node id or a connection id from /debug/connections")
		return
	}
	withBodies, _ := strconv.ParseBool(q.Get("resources"))
	connID, idErr := strconv.ParseUint(proxyID, 10, 64)

	out := configDumpJSON{Proxies: []proxyDumpJSON{}}
	for _, ci := range m.src.ADS.Connections() {
		if ci.NodeID != proxyID && (idErr != nil || ci.ID != connID) {
			continue
		}
		held, ok := m.src.ADS.Held(ci.ID)
		if !ok {
			continue // disconnected meanwhile
		}
		p := proxyDumpJSON{ID: ci.ID, Node: ci.NodeID, Types: []typeDumpJSON{}}
		for _, t := range slices.Sorted(maps.Keys(held)) {
			td := typeDumpJSON{Type: t, Resources: []resourceDumpJSON{}}
			for _, name := range slices.Sorted(maps.Keys(held[t])) {
				rd := resourceDumpJSON{Name: name, Version: held[t][name]}
				if withBodies {
					rd.Resource, rd.Note = m.body(t, name, rd.Version)
				}
				td.Resources = append(td.Resources, rd)
			}
			p.Types = append(p.Types, td)
		}
		out.Proxies = append(out.Proxies, p)
	}
	if len(out.Proxies) == 0 {
		m.writeError(w, http.StatusNotFound, "no connected proxy "+strconv.Quote(proxyID))
		return
	}
	m.writeJSON(w, http.StatusOK, out)
}

// body renders the cache's body of typeURL/name as JSON if the cache still
// holds version, which is what the proxy was sent.
func (m *Monitor) body(typeURL, name, version string) (json.RawMessage, string) {
	if m.src.Cache == nil {
		return nil, "no cache to read bodies from"
	}
	v, body, ok := m.src.Cache.Get(typeURL, name)
	switch {
	case !ok:
		return nil, "no longer in the cache"
	case v != version:
		return nil, "the cache holds version " + v + " now"
	}
	return anyJSON(body), ""
}

// anyJSON renders an Any as protojson when its type is linked into the
// binary, else as its type URL and base64 bytes.
func anyJSON(a *anypb.Any) json.RawMessage {
	if b, err := protojson.Marshal(a); err == nil {
		return b
	}
	b, _ := json.Marshal(struct {
		Type  string `json:"@type"`
		Value string `json:"value"`
	}{a.GetTypeUrl(), base64.StdEncoding.EncodeToString(a.GetValue())})
	return b
}

func (m *Monitor) writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		m.log.Error("encode debug response", "error", err)
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func (m *Monitor) writeError(w http.ResponseWriter, code int, msg string) {
	m.writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}
