package plugin

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{
			name: "defaults",
			in:   `{"cniVersion": "1.0.0", "name": "net", "type": "istio-cni"}`,
			check: func(t *testing.T, c *Config) {
				if c.Socket != "/var/run/istio-cni/pluginevent.sock" || c.Timeout != DefaultAgentTimeout || c.Level != slog.LevelInfo {
					t.Errorf("socket %s timeout %v level %v", c.Socket, c.Timeout, c.Level)
				}
				if !c.Exclude["kube-system"] || !c.Enabled() || c.PrevResult != nil {
					t.Errorf("exclude %v enabled %v prev %v", c.Exclude, c.Enabled(), c.PrevResult)
				}
			},
		},
		{
			name: "all fields",
			in: `{"cniVersion": "0.4.0", "name": "net", "type": "istio-cni", "cni_agent_run_dir": "/run/x",
				"exclude_namespaces": ["a", "", " b "], "plugin_log_level": "debug", "agent_timeout": "5s",
				"ambient_enabled": false, "enablement_selectors": [{"any": 1}]}`,
			check: func(t *testing.T, c *Config) {
				if c.Socket != "/run/x/pluginevent.sock" || c.Timeout != 5*time.Second || c.Level != slog.LevelDebug {
					t.Errorf("socket %s timeout %v level %v", c.Socket, c.Timeout, c.Level)
				}
				if !c.Exclude["a"] || !c.Exclude["b"] || c.Exclude[""] || len(c.Exclude) != 3 {
					t.Errorf("exclude %v", c.Exclude)
				}
				if c.Enabled() {
					t.Error("ambient_enabled false ignored")
				}
			},
		},
		{
			name: "prevResult converted to the config's version",
			in: `{"cniVersion": "0.3.1", "name": "net", "type": "istio-cni", "prevResult": {
				"interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
				"ips": [{"version": "4", "address": "10.1.2.3/24", "interface": 0}]}}`,
			check: func(t *testing.T, c *Config) {
				if c.PrevResult == nil || c.PrevResult.Version() != "0.3.1" {
					t.Fatalf("prevResult %v", c.PrevResult)
				}
				r, err := current.NewResultFromResult(c.PrevResult)
				if err != nil || len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.1.2.3/24" {
					t.Errorf("prevResult %v %v", r, err)
				}
			},
		},
		{name: "not json", in: `{`, wantErr: "parse istio-cni config"},
		{name: "no version", in: `{"name": "net"}`, wantErr: "cniVersion is missing"},
		{name: "bad version", in: `{"cniVersion": "one", "name": "net"}`, wantErr: "cniVersion"},
		{name: "bad level", in: `{"cniVersion": "1.0.0", "plugin_log_level": "loud"}`, wantErr: `plugin_log_level "loud"`},
		{name: "bad timeout", in: `{"cniVersion": "1.0.0", "agent_timeout": "soon"}`, wantErr: "agent_timeout"},
		{name: "negative timeout", in: `{"cniVersion": "1.0.0", "agent_timeout": "-1s"}`, wantErr: "must be positive"},
		{name: "bad namespace", in: `{"cniVersion": "1.0.0", "exclude_namespaces": ["a/b"]}`, wantErr: "exclude_namespaces"},
		{name: "wrong field type", in: `{"cniVersion": "1.0.0", "exclude_namespaces": "a"}`, wantErr: "parse istio-cni config"},
		{name: "bad prevResult", in: `{"cniVersion": "1.0.0", "prevResult": {"ips": [{"address": "nope"}]}}`, wantErr: "prevResult"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    PodArgs
		wantErr bool
	}{
		{in: "", want: PodArgs{}},
		{
			in:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
			want: PodArgs{Name: "p", Namespace: "ns", InfraID: "abc", UID: "u-1"},
		},
		{in: "K8S_POD_NAME=p;;", want: PodArgs{Name: "p"}},
		{in: "K8S_POD_NAME=a=b", want: PodArgs{Name: "a=b"}},
		{in: "K8S_POD_NAME", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseArgs(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// FuzzParseConfig feeds the parser what a runtime could put on stdin: it
// must never panic, and what it accepts must be usable.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion": "1.0.0", "name": "net", "type": "istio-cni"}`))
	f.Add([]byte(`{"cniVersion": "0.3.1", "name": "n", "exclude_namespaces": ["a", ""], "agent_timeout": "1s", "plugin_log_level": "warn"}`))
	f.Add([]byte(`{"cniVersion": "1.1.0", "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/24", "interface": 0}], "interfaces": [{"name": "eth0"}]}}`))
	f.Add([]byte(`{"cniVersion": "0.2.0", "prevResult": {"ip4": {"ip": "10.0.0.1/24"}}}`))
	f.Add([]byte(`{"cniVersion": "0.4.0", "prevResult": {"ips": [{"version": "6", "address": "fd00::1/64"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if c.Socket == "" || c.Timeout <= 0 || c.Exclude == nil {
			t.Fatalf("accepted config left unresolved: %+v", c)
		}
		if c.PrevResult != nil {
			if _, err := addresses(c.PrevResult); err != nil {
				t.Logf("prevResult addresses: %v", err)
			}
			_, _ = c.PrevResult.GetAsVersion(c.CNIVersion)
		}
		_, _ = ParseArgs(string(data))
	})
}
