package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ambient-mesh/mesh/cni/internal/plugin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const bridgeConflist = `{
  "cniVersion": "1.0.0",
  "name": "cbr0",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "mtu": 1450, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

const bridgeConf = `{
  "cniVersion": "0.3.1",
  "name": "cbr0",
  "type": "bridge",
  "bridge": "cni0",
  "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}
}`

func newTestInstaller(t *testing.T) (*Installer, string, string) {
	t.Helper()
	netDir, binDir := t.TempDir(), t.TempDir()
	bin := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := New(Config{
		NetDir: netDir, BinDir: binDir, Binary: bin,
		Settings: plugin.Settings{AgentRunDir: "/var/run/istio-cni", ExcludeNamespaces: []string{"kube-system"}},
		Interval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return in, netDir, binDir
}

func write(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

// types lists the plugin types of the list at path, in order.
func types(t *testing.T, path string) []string {
	t.Helper()
	doc, err := readConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	plugins, err := pluginList(doc, path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range plugins {
		out = append(out, p.(map[string]any)["type"].(string))
	}
	return out
}

func TestInstall(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		wantPath  string
		wantTypes []string
		wantGone  []string
	}{
		{
			name:      "append to conflist",
			files:     map[string]string{"10-bridge.conflist": bridgeConflist},
			wantPath:  "10-bridge.conflist",
			wantTypes: []string{"bridge", "portmap", plugin.Name},
		},
		{
			name:      "convert conf to conflist",
			files:     map[string]string{"10-bridge.conf": bridgeConf},
			wantPath:  "10-bridge.conflist",
			wantTypes: []string{"bridge", plugin.Name},
			wantGone:  []string{"10-bridge.conf"},
		},
		{
			name: "lowest sorted wins",
			files: map[string]string{
				"20-other.conflist":  strings.ReplaceAll(bridgeConflist, "cbr0", "other"),
				"10-bridge.conflist": bridgeConflist,
				"05-notes.txt":       "not a config",
			},
			wantPath:  "10-bridge.conflist",
			wantTypes: []string{"bridge", "portmap", plugin.Name},
		},
		{
			name: "stale entry moves to the end",
			files: map[string]string{"10-bridge.conflist": `{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
				{"type": "bridge"}, {"type": "istio-cni", "name": "istio-cni", "cni_agent_run_dir": "/old"}, {"type": "portmap"}]}`},
			wantPath:  "10-bridge.conflist",
			wantTypes: []string{"bridge", "portmap", plugin.Name},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, netDir, binDir := newTestInstaller(t)
			for name, body := range tt.files {
				write(t, filepath.Join(netDir, name), body, 0o600)
			}
			path, err := in.Install()
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(netDir, tt.wantPath); path != want {
				t.Errorf("installed into %s, want %s", path, want)
			}
			if got := types(t, path); !reflect.DeepEqual(got, tt.wantTypes) {
				t.Errorf("plugins %v, want %v", got, tt.wantTypes)
			}
			for _, g := range tt.wantGone {
				if _, err := os.Stat(filepath.Join(netDir, g)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still there after conversion: %v", g, err)
				}
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want the original 0600", st.Mode().Perm())
			}
			bst, err := os.Stat(filepath.Join(binDir, plugin.Name))
			if err != nil || bst.Mode().Perm() != 0o755 {
				t.Errorf("binary not installed executable: %v %v", bst, err)
			}
			// The entry carries the settings under the plugin's own names.
			doc, _ := readConfig(path)
			plugins, _ := pluginList(doc, path)
			entry := plugins[len(plugins)-1].(map[string]any)
			if entry["cni_agent_run_dir"] != "/var/run/istio-cni" || entry["name"] != plugin.Name {
				t.Errorf("entry %v", entry)
			}
			// Nothing but the config (and no temp files) in the dir.
			ents, _ := os.ReadDir(netDir)
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".tmp") {
					t.Errorf("temp file left behind: %s", e.Name())
				}
			}
		})
	}
}

func TestInstallKeepsOtherFields(t *testing.T) {
	in, netDir, _ := newTestInstaller(t)
	path := filepath.Join(netDir, "10-bridge.conflist")
	write(t, path, bridgeConflist, 0o644)
	if _, err := in.Install(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var doc struct {
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q", doc.CNIVersion)
	}
	if s := string(doc.Plugins[0]); !strings.Contains(s, `"mtu": 1450,`) || !strings.Contains(s, `"subnet": "10.244.1.0/24"`) {
		t.Errorf("primary plugin's fields changed: %s", s)
	}
}

func TestInstallIdempotent(t *testing.T) {
	in, netDir, _ := newTestInstaller(t)
	path := filepath.Join(netDir, "10-bridge.conflist")
	write(t, path, bridgeConflist, 0o644)
	if _, err := in.Install(); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(path)
	st1, _ := os.Stat(path)
	for range 3 {
		if _, err := in.Install(); err != nil {
			t.Fatal(err)
		}
	}
	second, _ := os.ReadFile(path)
	st2, _ := os.Stat(path)
	if string(first) != string(second) {
		t.Errorf("second install changed the file:\n%s\n---\n%s", first, second)
	}
	if !os.SameFile(st1, st2) {
		t.Error("second install rewrote an unchanged file")
	}
	if got := types(t, path); len(got) != 3 {
		t.Errorf("plugins %v", got)
	}
	if ok, err := in.installed(); !ok || err != nil {
		t.Errorf("installed() = %v, %v", ok, err)
	}
}

func TestInstallErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{name: "empty dir", wantErr: "no CNI network config"},
		{name: "malformed", files: map[string]string{"10-bad.conflist": `{"plugins": [`}, wantErr: "10-bad.conflist"},
		{name: "plugins not a list", files: map[string]string{"10-bad.conflist": `{"plugins": {}}`}, wantErr: "10-bad.conflist: plugins is not a list"},
		{name: "no type", files: map[string]string{"10-bad.conf": `{"name": "x"}`}, wantErr: "10-bad.conf: no plugin type"},
		{name: "list in a conf", files: map[string]string{"10-bad.conf": bridgeConflist}, wantErr: "10-bad.conf: no plugin type"},
		{name: "plugin in a conflist", files: map[string]string{"10-bad.conflist": bridgeConf}, wantErr: "10-bad.conflist: no plugins list"},
		{name: "plugin not an object", files: map[string]string{"10-bad.conflist": `{"plugins": [1]}`}, wantErr: "plugins[0] is not an object"},
		{name: "trailing data", files: map[string]string{"10-bad.conf": bridgeConf + "}"}, wantErr: "10-bad.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, netDir, _ := newTestInstaller(t)
			for name, body := range tt.files {
				write(t, filepath.Join(netDir, name), body, 0o644)
			}
			_, err := in.Install()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
			}
			for name, body := range tt.files {
				if b, _ := os.ReadFile(filepath.Join(netDir, name)); string(b) != body {
					t.Errorf("%s changed despite the error", name)
				}
			}
		})
	}
}

func TestUninstall(t *testing.T) {
	for _, tt := range []struct {
		name, file, body string
		wantTypes        []string
	}{
		{"conflist", "10-bridge.conflist", bridgeConflist, []string{"bridge", "portmap"}},
		{"converted conf", "10-bridge.conf", bridgeConf, []string{"bridge"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in, netDir, binDir := newTestInstaller(t)
			write(t, filepath.Join(netDir, tt.file), tt.body, 0o644)
			path, err := in.Install()
			if err != nil {
				t.Fatal(err)
			}
			if err := in.Uninstall(); err != nil {
				t.Fatal(err)
			}
			if got := types(t, path); !reflect.DeepEqual(got, tt.wantTypes) {
				t.Errorf("plugins after uninstall %v, want %v", got, tt.wantTypes)
			}
			// Field for field, what the primary CNI wrote.
			orig := map[string]any{}
			if err := unmarshal([]byte(tt.body), &orig); err != nil {
				t.Fatal(err)
			}
			if _, isList := orig["plugins"]; !isList {
				orig = toList(orig)
			}
			after, _ := readConfig(path)
			if !jsonEqual(after["plugins"], orig["plugins"]) {
				t.Errorf("plugins after uninstall differ from the original:\n got %v\nwant %v", after["plugins"], orig["plugins"])
			}
			if _, err := os.Stat(filepath.Join(binDir, plugin.Name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("binary still installed: %v", err)
			}
			// Uninstalling again is harmless.
			if err := in.Uninstall(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestWatchReinserts(t *testing.T) {
	in, netDir, binDir := newTestInstaller(t)
	path := filepath.Join(netDir, "10-bridge.conflist")
	write(t, path, bridgeConflist, 0o644)
	if _, err := in.Install(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); in.Watch(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	last := func(p string) string {
		doc, err := readConfig(p)
		if err != nil {
			return ""
		}
		plugins, err := pluginList(doc, p)
		if err != nil || len(plugins) == 0 {
			return ""
		}
		s, _ := plugins[len(plugins)-1].(map[string]any)["type"].(string)
		return s
	}

	// The primary CNI rewrites its file without us.
	write(t, path, bridgeConflist, 0o644)
	wait("re-insert after rewrite", func() bool { return last(path) == plugin.Name })
	if got := types(t, path); len(got) != 3 {
		t.Errorf("plugins %v", got)
	}

	// The binary is removed.
	if err := os.Remove(filepath.Join(binDir, plugin.Name)); err != nil {
		t.Fatal(err)
	}
	wait("binary restored", func() bool { _, err := os.Stat(filepath.Join(binDir, plugin.Name)); return err == nil })

	// A new primary appears: we move to it.
	newPrimary := filepath.Join(netDir, "05-new.conf")
	write(t, newPrimary, bridgeConf, 0o644)
	converted := filepath.Join(netDir, "05-new.conflist")
	wait("move to the new primary", func() bool { return last(converted) == plugin.Name })
	wait("leave the old primary", func() bool { return last(path) == "portmap" })
}

// TestWatchDoesNothingOnceStopped: a Watch whose context has ended takes
// no further look, even with a tick due. The agent stops its Watch before
// an uninstall; a look after the entry is gone would put it back, and
// every new pod on the node would then fail with no agent to serve it.
func TestWatchDoesNothingOnceStopped(t *testing.T) {
	in, netDir, _ := newTestInstaller(t)
	in.cfg.Interval = time.Nanosecond // a tick is due at once, every time
	path := filepath.Join(netDir, "10-bridge.conflist")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 200 {
		write(t, path, bridgeConflist, 0o644)
		if _, err := in.Install(); err != nil {
			t.Fatal(err)
		}
		if err := in.Uninstall(); err != nil {
			t.Fatal(err)
		}
		in.Watch(ctx)
		if got := types(t, path); slices.Contains(got, plugin.Name) {
			t.Fatalf("round %d: a stopped Watch put the plugin back: %v", i, got)
		}
	}
}
