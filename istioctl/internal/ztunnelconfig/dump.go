// Package ztunnelconfig decodes ztunnel's admin config dump and prints it
// the way istioctl ztunnel-config does.
package ztunnelconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// AdminPort is ztunnel's admin port (localhost only); the dump is at
// DumpPath on it.
const (
	AdminPort = 15000
	DumpPath  = "/config_dump"
)

// ErrMalformedDump is returned for a dump istioctl cannot read.
var ErrMalformedDump = errors.New("malformed ztunnel config dump")

// rawDump is the JSON of GET /config_dump, as far as istioctl reads it.
type rawDump struct {
	Workloads        map[string]json.RawMessage   `json:"workloads"`
	Services         map[string]json.RawMessage   `json:"services"`
	Policies         map[string]json.RawMessage   `json:"policies"`
	Certificates     []CertInfo                   `json:"certificates"`
	Pods             []PodInfo                    `json:"pods"`
	Connections      []ConnInfo                   `json:"connections"`
	ResourceVersions map[string]map[string]string `json:"resource_versions"`
}

// CertInfo is one of ztunnel's workload certificates: public parts only.
type CertInfo struct {
	Identity  string    `json:"identity"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Chain     []string  `json:"chain"` // PEM, leaf first
}

// PodInfo is a pod ztunnel serves.
type PodInfo struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Identity  string   `json:"identity"`
	IPs       []string `json:"ips"`
}

// ConnInfo is an open connection of a served pod.
type ConnInfo struct {
	ID          uint64    `json:"id"`
	Pod         string    `json:"pod"` // UID of the pod
	Direction   string    `json:"direction"`
	Src         string    `json:"src"`
	Dst         string    `json:"dst"`
	SrcIdentity string    `json:"src_identity,omitempty"`
	DstIdentity string    `json:"dst_identity,omitempty"`
	Via         string    `json:"via,omitempty"`
	Started     time.Time `json:"started"`
}

// Workload is a workload of the dump, with the key the dump gave it.
type Workload struct {
	Key string
	*workloadapi.Workload
}

// Service is a service of the dump, with its key.
type Service struct {
	Key string
	*workloadapi.Service
}

// Policy is an authorization policy of the dump, with its key.
type Policy struct {
	Key string
	*security.Authorization
}

// Dump is a decoded config dump, sorted for display.
type Dump struct {
	Workloads        []Workload
	Services         []Service
	Policies         []Policy
	Certificates     []CertInfo
	Pods             []PodInfo
	Connections      []ConnInfo
	ResourceVersions map[string]map[string]string

	raw rawDump
}

// Parse decodes a config dump. A dump that is not JSON, has none of the
// sections ztunnel writes, or holds a resource that does not decode is an
// error naming what is wrong.
func Parse(data []byte) (*Dump, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v (%s)", ErrMalformedDump, err, snippet(data))
	}
	found := false
	for _, k := range []string{"workloads", "services", "policies", "certificates"} {
		if _, ok := probe[k]; ok {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: it has none of workloads, services, policies, certificates (keys: %v)", ErrMalformedDump, slices.Sorted(maps.Keys(probe)))
	}
	var raw rawDump
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedDump, err)
	}
	d := &Dump{
		Certificates:     raw.Certificates,
		Pods:             raw.Pods,
		Connections:      raw.Connections,
		ResourceVersions: raw.ResourceVersions,
		raw:              raw,
	}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	decode := func(kind, key string, b json.RawMessage, m proto.Message) error {
		if err := opts.Unmarshal(b, m); err != nil {
			return fmt.Errorf("%w: %s %q: %v", ErrMalformedDump, kind, key, err)
		}
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(raw.Workloads)) {
		w := &workloadapi.Workload{}
		if err := decode("workload", k, raw.Workloads[k], w); err != nil {
			return nil, err
		}
		d.Workloads = append(d.Workloads, Workload{Key: k, Workload: w})
	}
	for _, k := range slices.Sorted(maps.Keys(raw.Services)) {
		s := &workloadapi.Service{}
		if err := decode("service", k, raw.Services[k], s); err != nil {
			return nil, err
		}
		d.Services = append(d.Services, Service{Key: k, Service: s})
	}
	for _, k := range slices.Sorted(maps.Keys(raw.Policies)) {
		p := &security.Authorization{}
		if err := decode("policy", k, raw.Policies[k], p); err != nil {
			return nil, err
		}
		d.Policies = append(d.Policies, Policy{Key: k, Authorization: p})
	}
	slices.SortStableFunc(d.Workloads, func(a, b Workload) int {
		return cmpStrings(a.GetNamespace(), b.GetNamespace(), a.GetName(), b.GetName(), a.Key, b.Key)
	})
	slices.SortStableFunc(d.Services, func(a, b Service) int {
		return cmpStrings(a.GetNamespace(), b.GetNamespace(), a.GetName(), b.GetName(), a.Key, b.Key)
	})
	slices.SortStableFunc(d.Policies, func(a, b Policy) int {
		return cmpStrings(a.GetNamespace(), b.GetNamespace(), a.GetName(), b.GetName(), a.Key, b.Key)
	})
	slices.SortStableFunc(d.Connections, func(a, b ConnInfo) int {
		return cmpStrings(a.Pod, b.Pod, a.Direction, b.Direction, a.Src, b.Src, a.Dst, b.Dst)
	})
	return d, nil
}

// cmpStrings compares pairs (a1, b1), (a2, b2), ... in order.
func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := bytes.Compare([]byte(pairs[i]), []byte(pairs[i+1])); c != 0 {
			return c
		}
	}
	return 0
}

func snippet(b []byte) string {
	const n = 80
	if len(b) > n {
		return fmt.Sprintf("%q...", b[:n])
	}
	return fmt.Sprintf("%q", b)
}
