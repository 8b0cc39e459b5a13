// Package proxystatus reads istiod's debug endpoints and prints, per
// connected proxy, how far each subscribed type is in sync, the way
// istioctl proxy-status does.
package proxystatus

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// MonitoringPort is istiod's monitoring port, which serves the debug
// endpoints at ConnectionsPath and SynczPath.
const (
	MonitoringPort  = 15014
	ConnectionsPath = "/debug/connections"
	SynczPath       = "/debug/syncz"
)

// The workload discovery types, as columns in this order.
const (
	AddressType       = "type.googleapis.com/istio.workload.Address"
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// Columns names the per-type columns.
var Columns = []struct{ Type, Name string }{
	{AddressType, "ADDRESS"},
	{AuthorizationType, "AUTHORIZATION"},
}

// ErrMalformed is returned for a debug response istioctl cannot read.
var ErrMalformed = errors.New("malformed istiod debug response")

// Connections is the body of /debug/connections.
type Connections struct {
	Connections []Connection `json:"connections"`
}

// Connection is one xDS stream.
type Connection struct {
	ID           uint64    `json:"id"`
	Node         string    `json:"node"`
	Peer         string    `json:"peer,omitempty"`
	ProxyVersion string    `json:"proxy_version,omitempty"`
	ConnectedAt  time.Time `json:"connected_at"`
}

// Syncz is the body of /debug/syncz.
type Syncz struct {
	Proxies []ProxySync `json:"proxies"`
}

// ProxySync is the sync state of one stream.
type ProxySync struct {
	ID    uint64     `json:"id"`
	Node  string     `json:"node"`
	Types []TypeSync `json:"types"`
}

// TypeSync is the sync state of one subscribed type.
type TypeSync struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	NACK   string `json:"nack,omitempty"`
}

// ParseConnections decodes /debug/connections.
func ParseConnections(b []byte) (*Connections, error) {
	var c Connections
	if err := strictObject(b, "connections", &c); err != nil {
		return nil, fmt.Errorf("%s: %w", ConnectionsPath, err)
	}
	return &c, nil
}

// ParseSyncz decodes /debug/syncz.
func ParseSyncz(b []byte) (*Syncz, error) {
	var s Syncz
	if err := strictObject(b, "proxies", &s); err != nil {
		return nil, fmt.Errorf("%s: %w", SynczPath, err)
	}
	return &s, nil
}

func strictObject(b []byte, key string, v any) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return fmt.Errorf("%w: not a JSON object: %v", ErrMalformed, err)
	}
	if _, ok := probe[key]; !ok {
		return fmt.Errorf("%w: no %q field", ErrMalformed, key)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Row is one proxy's line.
type Row struct {
	Name    string
	Cluster string
	Istiod  string
	Version string
	// Status per type URL: SYNCED, STALE, NACKED or NOT SENT.
	Status map[string]string
}

// Rows joins one istiod's connections and sync states.
func Rows(istiod string, conns *Connections, sync *Syncz) []Row {
	byID := map[uint64]ProxySync{}
	for _, p := range sync.Proxies {
		byID[p.ID] = p
	}
	var rows []Row
	for _, c := range conns.Connections {
		r := Row{Name: ProxyName(c.Node), Cluster: "Kubernetes", Istiod: istiod, Version: c.ProxyVersion, Status: map[string]string{}}
		if r.Version == "" {
			r.Version = "unknown"
		}
		if p, ok := byID[c.ID]; ok {
			for _, t := range p.Types {
				r.Status[t.Type] = t.Status
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// ProxyName turns a node id (ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local)
// into pod.namespace; other ids are shown as they are.
func ProxyName(node string) string {
	parts := strings.Split(node, "~")
	if len(parts) == 4 && parts[2] != "" {
		return parts[2]
	}
	return node
}

// Write prints rows as a table sorted by name, like istioctl proxy-status.
func Write(w io.Writer, rows []Row) error {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b Row) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Istiod, b.Istiod)
	})
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := []string{"NAME", "CLUSTER", "ISTIOD", "VERSION"}
	for _, c := range Columns {
		head = append(head, c.Name)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		cells := []string{r.Name, r.Cluster, r.Istiod, r.Version}
		for _, c := range Columns {
			s, ok := r.Status[c.Type]
			if !ok {
				s = "IGNORED" // not subscribed
			}
			cells = append(cells, s)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
