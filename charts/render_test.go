package charts

import (
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Release names and namespace as in the install docs.
const testNamespace = "istio-system"

var releaseNames = map[string]string{"base": "istio-base", "istiod": "istiod", "cni": "istio-cni", "ztunnel": "ztunnel"}

// loadChart loads a chart from FS, as istioctl does.
func loadChart(t testing.TB, name string) *chart.Chart {
	t.Helper()
	sub, err := fs.Sub(FS, name)
	if err != nil {
		t.Fatal(err)
	}
	var files []*archive.BufferedFile
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: p, Data: data})
		return nil
	})
	if err != nil {
		t.Fatalf("read chart %s: %v", name, err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		t.Fatalf("load chart %s: %v", name, err)
	}
	return c
}

// object is one rendered Kubernetes object.
type object struct {
	Kind, Name, Namespace, Template string
	Labels, Annotations             map[string]string
	yaml                            []byte
}

// manifest is a chart's rendered objects.
type manifest []object

// setValues parses helm --set style assignments.
func setValues(t testing.TB, sets ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return vals
}

// renderChart renders a chart into namespace with --set style values, the
// way helm install does (values.yaml coalesced with the user's values).
func renderChart(t testing.TB, name, namespace string, sets ...string) (manifest, error) {
	t.Helper()
	c := loadChart(t, name)
	vals, err := util.ToRenderValues(c, setValues(t, sets...),
		common.ReleaseOptions{Name: releaseNames[name], Namespace: namespace, IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(c, vals)
	if err != nil {
		return nil, err
	}
	var names []string
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	var m manifest
	for _, n := range names {
		if path.Ext(n) != ".yaml" {
			continue // NOTES.txt, helpers
		}
		for _, doc := range splitYAML(out[n]) {
			var meta struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name, Namespace string
					Labels          map[string]string
					Annotations     map[string]string
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(topLevel(doc, "apiVersion", "kind", "metadata")), &meta); err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", n, err, doc)
			}
			if meta.Kind == "" {
				t.Fatalf("%s: a document without a kind:\n%s", n, doc)
			}
			m = append(m, object{
				Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, Template: n,
				Labels: meta.Metadata.Labels, Annotations: meta.Metadata.Annotations, yaml: []byte(doc),
			})
		}
	}
	return m, nil
}

// render is renderChart into istio-system, failing the test on an error.
func render(t testing.TB, name string, sets ...string) manifest {
	t.Helper()
	m, err := renderChart(t, name, testNamespace, sets...)
	if err != nil {
		t.Fatalf("render %s %q: %v", name, sets, err)
	}
	return m
}

// renderFails renders a chart that must fail, with an error that says want.
func renderFails(t testing.TB, name, want string, sets ...string) {
	t.Helper()
	_, err := renderChart(t, name, testNamespace, sets...)
	if err == nil {
		t.Fatalf("render %s %q: no error, want one saying %q", name, sets, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("render %s %q: error %q does not say %q", name, sets, err, want)
	}
}

// splitYAML splits a rendered template at its document markers, leaving
// out documents that are only comments.
func splitYAML(s string) []string {
	var docs []string
	for _, d := range strings.Split("\n"+s, "\n---") {
		keep := false
		for _, line := range strings.Split(d, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				keep = true
				break
			}
		}
		if keep {
			docs = append(docs, d)
		}
	}
	return docs
}

// topLevel returns the named top-level keys of a block-style YAML
// document with their nested lines: decoding a CRD's metadata does not
// need its schema parsed.
func topLevel(doc string, keys ...string) string {
	var b strings.Builder
	keep := false
	for _, line := range strings.SplitAfter(doc, "\n") {
		if line != "" && line[0] != ' ' && line[0] != '#' && line[0] != '\n' && line[0] != '-' {
			key, _, _ := strings.Cut(line, ":")
			keep = slices.Contains(keys, key)
		}
		if keep {
			b.WriteString(line)
		}
	}
	return b.String()
}

// find returns the objects of a kind.
func (m manifest) find(kind string) []object {
	var out []object
	for _, o := range m {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// kinds lists the manifest's objects as "Kind/name".
func (m manifest) kinds() []string {
	var out []string
	for _, o := range m {
		out = append(out, o.Kind+"/"+o.Name)
	}
	return out
}

// get decodes the one object of a kind and name into a typed struct,
// strictly: a field the Kubernetes type does not have fails the test.
func get[T any](t testing.TB, m manifest, kind, name string) *T {
	t.Helper()
	var found *object
	for i := range m {
		if m[i].Kind == kind && m[i].Name == name {
			if found != nil {
				t.Fatalf("two %s/%s rendered", kind, name)
			}
			found = &m[i]
		}
	}
	if found == nil {
		t.Fatalf("no %s/%s rendered; have %v", kind, name, m.kinds())
	}
	return decode[T](t, *found)
}

func decode[T any](t testing.TB, o object) *T {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict(o.yaml, v); err != nil {
		t.Fatalf("decode %s/%s (%s): %v", o.Kind, o.Name, o.Template, err)
	}
	return v
}

// argValue returns the value of a "-flag=value" or "--flag=value" argument.
func argValue(args []string, flag string) (string, bool) {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

func mustArg(t testing.TB, args []string, flag string) string {
	t.Helper()
	v, ok := argValue(args, flag)
	if !ok {
		t.Fatalf("no -%s in %q", flag, args)
	}
	return v
}
