package install

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzInstall feeds the installer whatever the primary CNI might have
// written: it must never panic, and when it accepts a file the result must
// end with our entry and lose it again on Uninstall.
func FuzzInstall(f *testing.F) {
	f.Add([]byte(bridgeConflist), true)
	f.Add([]byte(bridgeConf), false)
	f.Add([]byte(`{"plugins": [1]}`), true)
	f.Add([]byte(`{"type": "x", "cniVersion": 7}`), false)
	f.Add([]byte(`{"plugins": [{"type": "istio-cni"}, {"type": "istio-cni"}]}`), true)
	f.Fuzz(func(t *testing.T, body []byte, list bool) {
		netDir, binDir := t.TempDir(), t.TempDir()
		name := "10-net.conf"
		if list {
			name = "10-net.conflist"
		}
		if err := os.WriteFile(filepath.Join(netDir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
		in, err := New(Config{NetDir: netDir, BinDir: binDir})
		if err != nil {
			t.Fatal(err)
		}
		path, err := in.Install()
		if err != nil {
			return
		}
		doc, err := readConfig(path)
		if err != nil {
			t.Fatalf("installed file unreadable: %v", err)
		}
		plugins, err := pluginList(doc, path)
		if err != nil || len(plugins) == 0 || !isOurs(plugins[len(plugins)-1]) || countOurs(plugins) != 1 {
			t.Fatalf("entry not last and single: %v %v", plugins, err)
		}
		if ok, err := in.installed(); !ok || err != nil {
			t.Fatalf("installed() = %v, %v right after Install", ok, err)
		}
		if err := in.Uninstall(); err != nil {
			t.Fatal(err)
		}
		doc, _ = readConfig(path)
		plugins, _ = pluginList(doc, path)
		if countOurs(plugins) != 0 {
			t.Fatalf("entry survived Uninstall: %v", plugins)
		}
	})
}
