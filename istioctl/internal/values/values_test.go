package values

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestChartValues(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		sets  []string
		want  map[string]string // chart -> YAML of its values
	}{
		{
			name: "nothing set",
			want: map[string]string{"base": "{}", "istiod": "{}", "cni": "{}", "ztunnel": "{}"},
		},
		{
			name: "profile hub tag go everywhere",
			sets: []string{"profile=ambient", "hub=registry.example/mesh", "tag=1.2.3"},
			want: map[string]string{
				"base":    "global: {hub: registry.example/mesh, tag: 1.2.3}\nprofile: ambient",
				"istiod":  "global: {hub: registry.example/mesh, tag: 1.2.3}\nprofile: ambient",
				"cni":     "global: {hub: registry.example/mesh, tag: 1.2.3}\nprofile: ambient",
				"ztunnel": "global: {hub: registry.example/mesh, tag: 1.2.3}\nprofile: ambient",
			},
		},
		{
			name: "values sections go to their charts",
			sets: []string{
				"values.global.imagePullPolicy=Always",
				"values.pilot.resources.requests.cpu=100m",
				"values.cni.cniBinDir=/home/kubernetes/bin",
				"values.cni.ambient.dnsCapture=true",
				"values.ztunnel.logLevel=debug",
				"values.trustedZtunnelNamespace=kube-system",
				"meshConfig.trustDomain=example.org",
			},
			want: map[string]string{
				"base":    "global: {imagePullPolicy: Always}",
				"istiod":  "global: {imagePullPolicy: Always}\nmeshConfig: {trustDomain: example.org}\npilot: {resources: {requests: {cpu: 100m}}}\ntrustedZtunnelNamespace: kube-system",
				"cni":     "ambient: {dnsCapture: true}\ncniBinDir: /home/kubernetes/bin\nglobal: {imagePullPolicy: Always}",
				"ztunnel": "global: {imagePullPolicy: Always}\nlogLevel: debug\nmeshConfig: {trustDomain: example.org}",
			},
		},
		{
			name: "IstioOperator file, then --set wins",
			files: []string{`
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  profile: ambient
  tag: "1.0"
  meshConfig:
    trustDomain: file.example
  values:
    ztunnel:
      logLevel: warn
    cni:
      excludeNamespaces: [kube-system, istio-system]
`},
			sets: []string{"tag=2.0", "values.ztunnel.logLevel=error"},
			want: map[string]string{
				"base":    "global: {tag: \"2.0\"}\nprofile: ambient",
				"istiod":  "global: {tag: \"2.0\"}\nmeshConfig: {trustDomain: file.example}\nprofile: ambient",
				"cni":     "excludeNamespaces: [kube-system, istio-system]\nglobal: {tag: \"2.0\"}\nprofile: ambient",
				"ztunnel": "global: {tag: \"2.0\"}\nlogLevel: error\nmeshConfig: {trustDomain: file.example}\nprofile: ambient",
			},
		},
		{
			name:  "bare spec file",
			files: []string{"values:\n  ztunnel:\n    resources:\n      requests: {cpu: 50m}\n"},
			want: map[string]string{
				"base": "{}", "istiod": "{}", "cni": "{}",
				"ztunnel": "resources: {requests: {cpu: 50m}}",
			},
		},
		{
			name: "list index in --set",
			sets: []string{"values.cni.excludeNamespaces[0]=kube-system"},
			want: map[string]string{
				"base": "{}", "istiod": "{}", "ztunnel": "{}",
				"cni": "excludeNamespaces: [kube-system]",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var specs []Spec
			for i, f := range tt.files {
				s, err := ParseFile("file"+string(rune('0'+i)), []byte(f))
				if err != nil {
					t.Fatal(err)
				}
				specs = append(specs, s)
			}
			spec, err := Build(specs, tt.sets)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ChartValues(spec)
			if err != nil {
				t.Fatal(err)
			}
			for _, chart := range Charts {
				var want map[string]any
				if err := yaml.Unmarshal([]byte(tt.want[chart]), &want); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(normalize(t, got[chart]), normalize(t, want)) {
					g, _ := yaml.Marshal(got[chart])
					t.Errorf("chart %s values:\n%s\nwant:\n%s", chart, g, tt.want[chart])
				}
			}
		})
	}
}

// normalize round-trips through YAML so that int64 and float64 compare.
func normalize(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out == nil {
		out = map[string]any{}
	}
	return out
}

func TestChartValuesErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		sets    []string
		wantErr string
	}{
		{name: "unknown top-level key", sets: []string{"components.cni.enabled=true"}, wantErr: `unknown key "components": istioctl understands profile, hub, tag, meshConfig, values`},
		{name: "unknown key in a file", files: []string{"kind: IstioOperator\napiVersion: install.istio.io/v1alpha1\nspec:\n  revision: canary\n"}, wantErr: `unknown key "revision"`},
		{name: "sidecar profile", sets: []string{"profile=default"}, wantErr: `profile "default" is not supported: this mesh is ambient only`},
		{name: "demo profile in a file", files: []string{"apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {profile: demo}\n"}, wantErr: `profile "demo" is not supported`},
		{name: "no equals sign", sets: []string{"profile"}, wantErr: `--set "profile": want key=value`},
		{name: "wrong kind", files: []string{"apiVersion: v1\nkind: ConfigMap\n"}, wantErr: "kind ConfigMap: want IstioOperator"},
		{name: "wrong apiVersion", files: []string{"apiVersion: install.istio.io/v2\nkind: IstioOperator\n"}, wantErr: "apiVersion install.istio.io/v2: want install.istio.io/v1alpha1"},
		{name: "values.cni not a map", sets: []string{"values.cni=x"}, wantErr: "values.cni: want a map"},
		{name: "not YAML", files: []string{"spec: [unclosed"}, wantErr: "file0:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := func() error {
				var specs []Spec
				for i, f := range tt.files {
					s, err := ParseFile("file"+string(rune('0'+i)), []byte(f))
					if err != nil {
						return err
					}
					specs = append(specs, s)
				}
				spec, err := Build(specs, tt.sets)
				if err != nil {
					return err
				}
				_, err = ChartValues(spec)
				return err
			}()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestUnknownKeyIsSentinel(t *testing.T) {
	_, err := ChartValues(Spec{"addonComponents": map[string]any{}})
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("error %v is not ErrUnknownKey", err)
	}
}

func TestFilesDoNotAlias(t *testing.T) {
	f, err := ParseFile("f", []byte("values:\n  ztunnel:\n    logLevel: info\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build([]Spec{f}, []string{"values.ztunnel.logLevel=debug"}); err != nil {
		t.Fatal(err)
	}
	if got := f["values"].(map[string]any)["ztunnel"].(map[string]any)["logLevel"]; got != "info" {
		t.Fatalf("the file's spec was changed to %v", got)
	}
}

func FuzzChartValues(f *testing.F) {
	f.Add([]byte("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {profile: ambient, values: {cni: {x: 1}}}\n"), "values.global.hub=x")
	f.Add([]byte("values: {global: 3}"), "meshConfig=3")
	f.Fuzz(func(t *testing.T, file []byte, set string) {
		s, err := ParseFile("f", file)
		if err != nil {
			return
		}
		spec, err := Build([]Spec{s}, []string{set})
		if err != nil {
			return
		}
		_, _ = ChartValues(spec)
	})
}
