package agentapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// Where the node agent listens. The run dir is shared with the node through
// a hostPath mount; the plugin finds the socket from its config.
const (
	DefaultRunDir = "/var/run/istio-cni"
	SocketName    = "pluginevent.sock"

	AddPath    = "/cmdadd"
	DelPath    = "/cmddel"
	StatusPath = "/status"
)

// MaxBodyBytes bounds a request or response body: a pod event is a few
// hundred bytes, anything near this is not one.
const MaxBodyBytes = 64 << 10

// SocketPath returns the socket inside runDir, or in DefaultRunDir when
// runDir is empty.
func SocketPath(runDir string) string {
	if runDir == "" {
		runDir = DefaultRunDir
	}
	return filepath.Join(runDir, SocketName)
}

// PodAdded is the body of POST /cmdadd: a pod sandbox got its network.
type PodAdded struct {
	// Netns is the path of the sandbox's network namespace (CNI_NETNS).
	Netns        string `json:"Netns"`
	PodName      string `json:"PodName"`
	PodNamespace string `json:"PodNamespace"`
	// IPs are the addresses earlier plugins in the chain gave the pod.
	IPs []IPConfig `json:"IPs,omitempty"`
	// PodUID is set by runtimes that pass K8S_POD_UID.
	PodUID      string `json:"PodUID,omitempty"`
	ContainerID string `json:"ContainerID,omitempty"`
	IfName      string `json:"IfName,omitempty"`
}

// IPConfig is one address of the pod, as in a CNI result.
type IPConfig struct {
	// Address in CIDR form, e.g. 10.244.1.7/24.
	Address   string `json:"address"`
	Gateway   string `json:"gateway,omitempty"`
	Interface *int   `json:"interface,omitempty"`
}

// AddResult is the body of a 200 answer to POST /cmdadd.
type AddResult struct {
	// Enrolled is true when the pod is captured and ztunnel acked it, false
	// when the agent decided the pod is not part of the mesh.
	Enrolled bool `json:"Enrolled"`
	// Reason says why a pod was not enrolled, for the plugin's log.
	Reason string `json:"Reason,omitempty"`
}

// PodDeleted is the body of POST /cmddel: a sandbox's network is going away.
type PodDeleted struct {
	Netns        string `json:"Netns,omitempty"`
	PodName      string `json:"PodName"`
	PodNamespace string `json:"PodNamespace"`
	PodUID       string `json:"PodUID,omitempty"`
	ContainerID  string `json:"ContainerID,omitempty"`
}

// StatusResult is the body of GET /status: 200 when ready, 503 otherwise.
type StatusResult struct {
	Ready  bool   `json:"Ready"`
	Reason string `json:"Reason,omitempty"`
}

// ErrorResult is the body of any non-2xx answer.
type ErrorResult struct {
	Error string `json:"Error"`
}

// Validate reports what is missing from an add request.
func (r *PodAdded) Validate() error {
	switch {
	case r.PodName == "" || r.PodNamespace == "":
		return errors.New("pod name and namespace are required")
	case r.Netns == "":
		return fmt.Errorf("pod %s/%s: netns is required", r.PodNamespace, r.PodName)
	}
	return nil
}

// Validate reports what is missing from a delete request.
func (r *PodDeleted) Validate() error {
	if r.PodName == "" || r.PodNamespace == "" {
		return errors.New("pod name and namespace are required")
	}
	return nil
}

// DecodePodAdded parses and validates an add request body.
func DecodePodAdded(r io.Reader) (PodAdded, error) {
	var req PodAdded
	if err := decode(r, &req); err != nil {
		return PodAdded{}, err
	}
	return req, req.Validate()
}

// DecodePodDeleted parses and validates a delete request body.
func DecodePodDeleted(r io.Reader) (PodDeleted, error) {
	var req PodDeleted
	if err := decode(r, &req); err != nil {
		return PodDeleted{}, err
	}
	return req, req.Validate()
}

// decode reads exactly one JSON object, no larger than MaxBodyBytes.
func decode(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, MaxBodyBytes+1))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	if dec.InputOffset() > MaxBodyBytes {
		return fmt.Errorf("request larger than %d bytes", MaxBodyBytes)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode request: trailing data after the JSON object")
	}
	return nil
}
