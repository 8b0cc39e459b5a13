package install

import (
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// Object names one object of a rendered manifest.
type Object struct {
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
}

// String is kind/name in lowercase, as kubectl names objects.
func (o Object) String() string { return strings.ToLower(o.Kind) + "/" + o.Name }

// Objects lists the objects of a multi-document YAML manifest; documents
// that are empty or comments only are skipped.
func Objects(manifest string) ([]Object, error) {
	var out []Object
	for i, doc := range splitYAML(manifest) {
		var m struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", i+1, err)
		}
		if m.Kind == "" {
			continue
		}
		out = append(out, Object{APIVersion: m.APIVersion, Kind: m.Kind, Namespace: m.Metadata.Namespace, Name: m.Metadata.Name})
	}
	return out, nil
}

func splitYAML(s string) []string {
	var docs []string
	var cur []string
	flush := func() {
		doc := strings.Join(cur, "\n")
		cur = nil
		for _, l := range strings.Split(doc, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, doc)
				return
			}
		}
	}
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "---") && strings.TrimSpace(strings.TrimLeft(l, "-")) == "" {
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()
	return docs
}

// Waitable returns the objects install waits for: CRDs, Deployments and
// DaemonSets.
func Waitable(objs []Object) []Object {
	var out []Object
	for _, o := range objs {
		switch o.Kind {
		case "CustomResourceDefinition", "Deployment", "DaemonSet":
			out = append(out, o)
		}
	}
	return out
}
