package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ambient-mesh/mesh/cni/internal/plugin"
)

// ErrNoNetwork means the net dir holds no network config yet: the primary
// CNI has not been installed. Watch waits for it.
var ErrNoNetwork = errors.New("no CNI network config")

// Extensions a runtime loads from the net dir, as libcni's ConfFiles does.
var confExtensions = []string{".conf", ".conflist", ".json"}

// DefaultInterval is how often Watch looks at the net dir.
const DefaultInterval = time.Second

// Config says where the plugin goes and what its entry holds.
type Config struct {
	// NetDir is the runtime's CNI config dir, e.g. /etc/cni/net.d.
	NetDir string
	// BinDir is the runtime's CNI plugin dir, e.g. /opt/cni/bin.
	BinDir string
	// Binary is the plugin binary to copy into BinDir. Empty: do not copy.
	Binary string
	// Settings are written into the plugin's entry.
	Settings plugin.Settings
	// Interval between Watch's looks; DefaultInterval when zero.
	Interval time.Duration
	Log      *slog.Logger
}

// Installer installs, keeps and removes the plugin. Its methods must not be
// called concurrently.
type Installer struct {
	cfg   Config
	entry map[string]any
	log   *slog.Logger
	// binSize is the size of the binary last copied, to notice a removed or
	// replaced copy without rereading it.
	binSize int64
}

// New checks the config and builds the plugin's entry.
func New(cfg Config) (*Installer, error) {
	if cfg.NetDir == "" || cfg.BinDir == "" {
		return nil, errors.New("install: net dir and bin dir are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	entry, err := buildEntry(cfg.Settings)
	if err != nil {
		return nil, err
	}
	return &Installer{cfg: cfg, entry: entry, log: log}, nil
}

// buildEntry renders the plugin's conflist entry through the same struct
// the plugin parses, so the two cannot disagree on field names.
func buildEntry(s plugin.Settings) (map[string]any, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	entry := map[string]any{}
	if err := unmarshal(b, &entry); err != nil {
		return nil, err
	}
	entry["type"] = plugin.Name
	entry["name"] = plugin.Name
	return entry, nil
}

// Install copies the binary and inserts the entry into the primary config.
// It returns the config file's path. Installing twice changes nothing.
func (in *Installer) Install() (string, error) {
	if in.cfg.Binary != "" {
		if err := in.copyBinary(); err != nil {
			return "", err
		}
	}
	primary, err := Primary(in.cfg.NetDir)
	if err != nil {
		return "", err
	}
	path, err := in.insert(primary)
	if err != nil {
		return "", err
	}
	in.removeElsewhere(path)
	return path, nil
}

// Watch re-installs whenever the primary config loses the entry (the
// primary CNI rewrote it, or a new primary appeared) or the binary goes,
// until ctx is done. Errors are logged and retried.
func (in *Installer) Watch(ctx context.Context) {
	t := time.NewTicker(in.cfg.Interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A select with both ready picks either: once stopped, never look
		// again (the agent uninstalls right after stopping Watch).
		if ctx.Err() != nil {
			return
		}
		ok, err := in.installed()
		if err == nil && ok {
			lastErr = ""
			continue
		}
		path, err := in.Install()
		if err != nil {
			// Log each distinct failure once, not every tick.
			if err.Error() != lastErr {
				in.log.Warn("cannot install CNI plugin, will retry", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		in.log.Info("CNI plugin re-inserted", "config", path)
	}
}

// installed reports whether the primary config ends with our current entry
// and the binary is in place.
func (in *Installer) installed() (bool, error) {
	if in.cfg.Binary != "" {
		st, err := os.Stat(filepath.Join(in.cfg.BinDir, plugin.Name))
		if err != nil || st.Size() != in.binSize {
			return false, nil
		}
	}
	primary, err := Primary(in.cfg.NetDir)
	if err != nil {
		return false, err
	}
	if !strings.HasSuffix(primary, ".conflist") {
		return false, nil
	}
	doc, err := readConfig(primary)
	if err != nil {
		return false, err
	}
	plugins, err := pluginList(doc, primary)
	if err != nil {
		return false, err
	}
	return len(plugins) > 0 && jsonEqual(plugins[len(plugins)-1], in.entry), nil
}

// Uninstall removes the entry from every config in the net dir and the
// binary from the bin dir.
func (in *Installer) Uninstall() error {
	var errs []error
	files, err := confFiles(in.cfg.NetDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, f := range files {
		if err := removeEntry(f); err != nil {
			errs = append(errs, err)
		}
	}
	if in.cfg.Binary != "" {
		bin := filepath.Join(in.cfg.BinDir, plugin.Name)
		if err := os.Remove(bin); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", bin, err))
		}
	}
	return errors.Join(errs...)
}

// Primary returns the config file a runtime uses: the lowest-sorted one.
// A malformed primary is an error naming it, not a reason to pick another
// file: the runtime would not pick another either.
func Primary(netDir string) (string, error) {
	files, err := confFiles(netDir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%w in %s", ErrNoNetwork, netDir)
	}
	path := files[0]
	doc, err := readConfig(path)
	if err != nil {
		return "", err
	}
	// The extension says how a runtime reads the file, as libcni does.
	if isListFile(path) {
		if _, err := pluginList(doc, path); err != nil {
			return "", err
		}
	} else if t, _ := doc["type"].(string); t == "" {
		return "", fmt.Errorf("CNI config %s: no plugin type (a list needs the .conflist extension)", path)
	}
	return path, nil
}

// confFiles lists the net dir's config files, sorted.
func confFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read CNI net dir: %w", err)
	}
	var files []string
	for _, e := range ents {
		if e.IsDir() || !slices.Contains(confExtensions, filepath.Ext(e.Name())) {
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	sort.Strings(files)
	return files, nil
}

// insert puts the entry at the end of the config at path and returns the
// path it now lives in (a .conf becomes a .conflist next to it).
func (in *Installer) insert(path string) (string, error) {
	doc, err := readConfig(path)
	if err != nil {
		return "", err
	}
	mode := fileMode(path)
	if !isListFile(path) {
		list := toList(doc)
		list["plugins"] = append(list["plugins"].([]any), in.entry)
		out := strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
		if err := writeConfig(out, list, mode); err != nil {
			return "", err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("remove %s after converting it to %s: %w", path, out, err)
		}
		in.log.Info("CNI plugin inserted", "config", out, "convertedFrom", path)
		return out, nil
	}
	plugins, err := pluginList(doc, path)
	if err != nil {
		return "", err
	}
	if len(plugins) > 0 && jsonEqual(plugins[len(plugins)-1], in.entry) && countOurs(plugins) == 1 {
		return path, nil
	}
	doc["plugins"] = append(withoutOurs(plugins), in.entry)
	if err := writeConfig(path, doc, mode); err != nil {
		return "", err
	}
	in.log.Info("CNI plugin inserted", "config", path)
	return path, nil
}

// toList wraps a single plugin's config into a list holding it.
func toList(conf map[string]any) map[string]any {
	v, _ := conf["cniVersion"].(string)
	// Lists start at 0.3.0; older plugin configs become 0.3.1 lists.
	if v == "" || v == "0.1.0" || v == "0.2.0" {
		v = "0.3.1"
	}
	name, _ := conf["name"].(string)
	p := make(map[string]any, len(conf))
	for k, val := range conf {
		if k != "cniVersion" {
			p[k] = val
		}
	}
	return map[string]any{"cniVersion": v, "name": name, "plugins": []any{p}}
}

// removeElsewhere takes the entry out of configs other than the one now in
// use, which happens when a new primary appears.
func (in *Installer) removeElsewhere(keep string) {
	files, err := confFiles(in.cfg.NetDir)
	if err != nil {
		return
	}
	for _, f := range files {
		if f == keep {
			continue
		}
		if err := removeEntry(f); err != nil {
			in.log.Warn("cannot remove CNI plugin from a config no longer in use", "config", f, "err", err)
		}
	}
}

// removeEntry takes the entry out of the list at path, if it is there.
// Files that do not parse cannot hold our entry and are not ours to fix.
func removeEntry(path string) error {
	if !isListFile(path) {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read CNI config: %w", err)
	}
	doc := map[string]any{}
	if unmarshal(b, &doc) != nil {
		return nil
	}
	plugins, err := pluginList(doc, path)
	if err != nil {
		return nil
	}
	if countOurs(plugins) == 0 {
		return nil
	}
	doc["plugins"] = withoutOurs(plugins)
	return writeConfig(path, doc, fileMode(path))
}

func readConfig(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CNI config: %w", err)
	}
	doc := map[string]any{}
	if err := unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("CNI config %s: %w", path, err)
	}
	return doc, nil
}

// unmarshal keeps numbers as written, so rewriting a file does not turn an
// MTU of 1450 into 1450.0 or lose precision.
func unmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func isListFile(path string) bool { return filepath.Ext(path) == ".conflist" }

func pluginList(doc map[string]any, path string) ([]any, error) {
	raw, ok := doc["plugins"]
	if !ok {
		return nil, fmt.Errorf("CNI config %s: no plugins list", path)
	}
	plugins, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("CNI config %s: plugins is not a list", path)
	}
	for i, p := range plugins {
		if _, ok := p.(map[string]any); !ok {
			return nil, fmt.Errorf("CNI config %s: plugins[%d] is not an object", path, i)
		}
	}
	return plugins, nil
}

func isOurs(p any) bool {
	m, _ := p.(map[string]any)
	t, _ := m["type"].(string)
	return t == plugin.Name
}

func countOurs(plugins []any) int {
	n := 0
	for _, p := range plugins {
		if isOurs(p) {
			n++
		}
	}
	return n
}

func withoutOurs(plugins []any) []any {
	out := make([]any, 0, len(plugins))
	for _, p := range plugins {
		if !isOurs(p) {
			out = append(out, p)
		}
	}
	return out
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func fileMode(path string) fs.FileMode {
	if st, err := os.Stat(path); err == nil {
		return st.Mode().Perm()
	}
	return 0o644
}

// writeConfig replaces path atomically: runtimes read the dir at any time
// and must never see half a file.
func writeConfig(path string, doc map[string]any, mode fs.FileMode) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode CNI config %s: %w", path, err)
	}
	return atomicWrite(path, bytes.NewReader(append(b, '\n')), mode)
}

// atomicWrite writes to a hidden temp file in the same dir, with an
// extension no runtime loads, then renames it over path.
func atomicWrite(path string, r io.Reader, mode fs.FileMode) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// copyBinary installs the plugin binary. The rename never disturbs a
// runtime executing the old copy.
func (in *Installer) copyBinary() error {
	src, err := os.Open(in.cfg.Binary)
	if err != nil {
		return fmt.Errorf("open plugin binary: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("stat plugin binary: %w", err)
	}
	if err := atomicWrite(filepath.Join(in.cfg.BinDir, plugin.Name), src, 0o755); err != nil {
		return err
	}
	in.binSize = st.Size()
	return nil
}
