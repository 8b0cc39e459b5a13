package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/ambient-mesh/mesh/cni/internal/agentapi"
)

// Name is the plugin's type in a conflist and the binary's name in the CNI
// bin dir; it matches Istio's so either node agent finds the other's entry.
const Name = "istio-cni"

// Defaults for fields the conflist entry leaves out.
const (
	DefaultLogLevel     = "info"
	DefaultAgentTimeout = 30 * time.Second
)

// alwaysExcluded namespaces are never sent to the agent, whatever the
// config says: the cluster's own add-ons must start while the mesh is down.
var alwaysExcluded = []string{"kube-system"}

// Settings are the plugin's own fields in its conflist entry. The node
// agent's installer writes them; field names follow Istio's plugin.
type Settings struct {
	// AgentRunDir holds the agent's socket (agentapi.SocketName).
	AgentRunDir string `json:"cni_agent_run_dir,omitempty"`
	// ExcludeNamespaces are passed through without asking the agent.
	ExcludeNamespaces []string `json:"exclude_namespaces,omitempty"`
	// LogLevel is debug, info, warn or error; logs go to stderr.
	LogLevel string `json:"plugin_log_level,omitempty"`
	// AgentTimeout bounds an ADD's wait for the agent (and ztunnel's ack),
	// as a Go duration such as "30s".
	AgentTimeout string `json:"agent_timeout,omitempty"`
	// AmbientEnabled false turns the plugin into a pure pass-through.
	// Absent means enabled.
	AmbientEnabled *bool `json:"ambient_enabled,omitempty"`
}

// Config is the plugin's whole stdin: the standard fields, the plugin's own,
// and the parsed prevResult.
type Config struct {
	types.PluginConf
	Settings

	// Resolved from Settings by ParseConfig.
	Socket  string          `json:"-"`
	Timeout time.Duration   `json:"-"`
	Level   slog.Level      `json:"-"`
	Exclude map[string]bool `json:"-"`
}

// ParseConfig parses the network configuration a runtime passes on stdin,
// fills in defaults, and parses prevResult into the config's own version.
func ParseConfig(stdin []byte) (*Config, error) {
	var conf Config
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, fmt.Errorf("parse %s config: %w", Name, err)
	}
	if conf.CNIVersion == "" {
		return nil, fmt.Errorf("parse %s config: cniVersion is missing", Name)
	}
	if _, _, _, err := version.ParseVersion(conf.CNIVersion); err != nil {
		return nil, fmt.Errorf("parse %s config: cniVersion: %w", Name, err)
	}
	if err := conf.resolve(); err != nil {
		return nil, fmt.Errorf("parse %s config: %w", Name, err)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("parse %s config: prevResult: %w", Name, err)
	}
	return &conf, nil
}

func (c *Config) resolve() error {
	c.Socket = agentapi.SocketPath(c.AgentRunDir)

	c.Timeout = DefaultAgentTimeout
	if c.AgentTimeout != "" {
		d, err := time.ParseDuration(c.AgentTimeout)
		if err != nil {
			return fmt.Errorf("agent_timeout: %w", err)
		}
		if d <= 0 {
			return fmt.Errorf("agent_timeout %q: must be positive", c.AgentTimeout)
		}
		c.Timeout = d
	}

	lvl := c.LogLevel
	if lvl == "" {
		lvl = DefaultLogLevel
	}
	if err := c.Level.UnmarshalText([]byte(lvl)); err != nil {
		return fmt.Errorf("plugin_log_level %q: want debug, info, warn or error", c.LogLevel)
	}

	c.Exclude = make(map[string]bool, len(c.ExcludeNamespaces)+len(alwaysExcluded))
	for _, ns := range alwaysExcluded {
		c.Exclude[ns] = true
	}
	for _, ns := range c.ExcludeNamespaces {
		// Installers that split an empty comma-separated list leave "".
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if strings.ContainsAny(ns, " /\t\n") {
			return fmt.Errorf("exclude_namespaces: %q is not a namespace name", ns)
		}
		c.Exclude[ns] = true
	}
	return nil
}

// Enabled reports whether the plugin talks to the agent at all.
func (c *Config) Enabled() bool {
	return c.AmbientEnabled == nil || *c.AmbientEnabled
}

// PodArgs are the Kubernetes keys of CNI_ARGS.
type PodArgs struct {
	Name      string
	Namespace string
	InfraID   string
	UID       string
}

// ParseArgs parses CNI_ARGS ("K=V;K=V"). Unknown keys are ignored: runtimes
// add their own.
func ParseArgs(s string) (PodArgs, error) {
	var a PodArgs
	if s == "" {
		return a, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return PodArgs{}, fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", kv)
		}
		switch k {
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			a.InfraID = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	return a, nil
}

// errNoPrevResult is CHECK's answer when the chain gave us nothing to check.
var errNoPrevResult = errors.New("prevResult is required")
