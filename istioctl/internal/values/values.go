// Package values turns istioctl's Istio-style settings (--set flags and
// IstioOperator files) into the Helm values of each of the mesh's charts.
package values

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Chart names, as directories of the charts package.
const (
	Base    = "base"
	Istiod  = "istiod"
	CNI     = "cni"
	Ztunnel = "ztunnel"
)

// Charts are the charts values are computed for.
var Charts = []string{Base, Istiod, CNI, Ztunnel}

// Profiles are the accepted profiles: this mesh is ambient only, so the
// empty profile means ambient too.
var Profiles = []string{"", "ambient"}

// ErrUnknownKey is returned for a setting istioctl does not know where to put.
var ErrUnknownKey = errors.New("unknown key")

// topKeys are the IstioOperator spec fields istioctl understands.
var topKeys = []string{"profile", "hub", "tag", "meshConfig", "values"}

const (
	operatorAPIVersion = "install.istio.io/v1alpha1"
	operatorKind       = "IstioOperator"
)

// Spec is an IstioOperator spec, as generic maps, before it is split into
// chart values.
type Spec map[string]any

// ParseFile reads one -f file: an IstioOperator (apiVersion
// install.istio.io/v1alpha1, kind IstioOperator) whose spec is used, or a
// bare spec (profile, hub, tag, meshConfig, values at the top level).
func ParseFile(name string, data []byte) (Spec, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if doc == nil {
		return Spec{}, nil
	}
	kind, hasKind := doc["kind"]
	apiVersion, hasAPI := doc["apiVersion"]
	if !hasKind && !hasAPI {
		return Spec(doc), nil
	}
	if kind != operatorKind {
		return nil, fmt.Errorf("%s: kind %v: want %s", name, kind, operatorKind)
	}
	if av, _ := apiVersion.(string); av != operatorAPIVersion {
		return nil, fmt.Errorf("%s: apiVersion %v: want %s", name, apiVersion, operatorAPIVersion)
	}
	spec, ok := doc["spec"].(map[string]any)
	if doc["spec"] != nil && !ok {
		return nil, fmt.Errorf("%s: spec is not a map", name)
	}
	if spec == nil {
		spec = map[string]any{}
	}
	return Spec(spec), nil
}

// ApplySet applies --set flags (key=value, Helm's syntax: a.b[0]=c) on top
// of spec, in order.
func ApplySet(spec Spec, sets []string) error {
	for _, s := range sets {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("--set %q: want key=value", s)
		}
		one := map[string]any{}
		if err := strvals.ParseInto(s, one); err != nil {
			return fmt.Errorf("--set %q: %w", s, err)
		}
		merge(spec, one)
	}
	return nil
}

// Build merges the files (in order) and then the --set flags into one spec.
func Build(files []Spec, sets []string) (Spec, error) {
	spec := Spec{}
	for _, f := range files {
		merge(spec, deepCopy(f))
	}
	if err := ApplySet(spec, sets); err != nil {
		return nil, err
	}
	return spec, nil
}

// Profile returns the spec's profile after checking it is one this mesh
// installs.
func (s Spec) Profile() (string, error) {
	p, _ := s["profile"].(string)
	if v, ok := s["profile"]; ok && v != nil {
		if _, isStr := v.(string); !isStr {
			return "", fmt.Errorf("profile %v: want a string", v)
		}
	}
	if !slices.Contains(Profiles, p) {
		return "", fmt.Errorf("profile %q is not supported: this mesh is ambient only (use --set profile=ambient or leave it out)", p)
	}
	return p, nil
}

// ChartValues splits spec into each chart's values:
//
//	profile, hub, tag        -> every chart: profile, global.hub, global.tag
//	values.global.X          -> every chart: global.X
//	meshConfig.X             -> istiod and ztunnel: meshConfig.X
//	values.pilot.X           -> istiod: pilot.X
//	values.cni.X             -> cni: X
//	values.ztunnel.X         -> ztunnel: X
//	values.base.X            -> base: X
//	values.X (other X)       -> istiod: X
func ChartValues(spec Spec) (map[string]map[string]any, error) {
	for _, k := range slices.Sorted(maps.Keys(spec)) {
		if !slices.Contains(topKeys, k) {
			return nil, fmt.Errorf("%w %q: istioctl understands %s", ErrUnknownKey, k, strings.Join(topKeys, ", "))
		}
	}
	profile, err := spec.Profile()
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]any{}
	for _, c := range Charts {
		out[c] = map[string]any{}
	}
	every := func(path []string, v any) {
		for _, c := range Charts {
			setPath(out[c], path, deepCopyValue(v))
		}
	}
	if profile != "" {
		every([]string{"profile"}, profile)
	}
	for _, k := range []string{"hub", "tag"} {
		v, ok := spec[k]
		if !ok || v == nil {
			continue
		}
		if _, isMap := v.(map[string]any); isMap {
			return nil, fmt.Errorf("%s: want a string, not a map", k)
		}
		every([]string{"global", k}, v)
	}
	if mc, ok := spec["meshConfig"]; ok && mc != nil {
		m, isMap := mc.(map[string]any)
		if !isMap {
			return nil, fmt.Errorf("meshConfig: want a map, got %v", mc)
		}
		merge(ensureMap(out[Istiod], "meshConfig"), deepCopy(m))
		merge(ensureMap(out[Ztunnel], "meshConfig"), deepCopy(m))
	}
	if vs, ok := spec["values"]; ok && vs != nil {
		m, isMap := vs.(map[string]any)
		if !isMap {
			return nil, fmt.Errorf("values: want a map, got %v", vs)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			v := m[k]
			sub, subIsMap := v.(map[string]any)
			switch k {
			case "global", "cni", "ztunnel", "base":
				if !subIsMap {
					return nil, fmt.Errorf("values.%s: want a map, got %v", k, v)
				}
			}
			switch k {
			case "global":
				for _, c := range Charts {
					merge(ensureMap(out[c], "global"), deepCopy(sub))
				}
			case "cni":
				merge(out[CNI], deepCopy(sub))
			case "ztunnel":
				merge(out[Ztunnel], deepCopy(sub))
			case "base":
				merge(out[Base], deepCopy(sub))
			default: // pilot and everything else belongs to istiod
				merge(out[Istiod], map[string]any{k: deepCopyValue(v)})
			}
		}
	}
	return out, nil
}

// merge merges src into dst: maps recursively, everything else replaced.
func merge(dst, src map[string]any) {
	for k, v := range src {
		sm, srcIsMap := v.(map[string]any)
		dm, dstIsMap := dst[k].(map[string]any)
		if srcIsMap && dstIsMap {
			merge(dm, sm)
			continue
		}
		dst[k] = v
	}
}

func ensureMap(m map[string]any, k string) map[string]any {
	if sub, ok := m[k].(map[string]any); ok {
		return sub
	}
	sub := map[string]any{}
	m[k] = sub
	return sub
}

func setPath(m map[string]any, path []string, v any) {
	for _, k := range path[:len(path)-1] {
		m = ensureMap(m, k)
	}
	m[path[len(path)-1]] = v
}

func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return deepCopy(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopyValue(e)
		}
		return out
	default:
		return v
	}
}
