package charts

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestDocsListPrivileges checks that docs/install.md's least-privilege
// section lists exactly the RBAC rules and capabilities the charts grant.
func TestDocsListPrivileges(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Least privilege\n")
	if !ok {
		t.Fatal("docs/install.md has no Least privilege section")
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]*)` \\| `([^`]*)` \\| `([^`]*)` \\|")
	documented := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		documented[m[1]+" | "+m[2]+" | "+m[3]] = true
	}
	granted := map[string]bool{}
	for _, r := range slices.Concat(istiodClusterRules, istiodNamespaceRules, cniClusterRules, cniNamespaceRules, []rbacv1.PolicyRule{cniDeleteRule}) {
		granted[docRule(r)] = true
	}
	for r := range granted {
		if !documented[r] {
			t.Errorf("docs/install.md does not list the rule %s", r)
		}
	}
	for r := range documented {
		if !granted[r] {
			t.Errorf("docs/install.md lists %s, which no chart grants", r)
		}
	}
	_, c := ztunnel(t)
	for _, capability := range c.SecurityContext.Capabilities.Add {
		if !strings.Contains(section, "| `"+string(capability)+"` |") {
			t.Errorf("docs/install.md does not say why ztunnel has %s", capability)
		}
	}
}

// docRule writes a rule the way the docs' tables do.
func docRule(r rbacv1.PolicyRule) string {
	groups := slices.Clone(r.APIGroups)
	for i, g := range groups {
		if g == "" {
			groups[i] = `""`
		}
	}
	return strings.Join(groups, ", ") + " | " + strings.Join(r.Resources, ", ") + " | " + strings.Join(r.Verbs, ", ")
}

// objectValues are values users set as whole objects or lists; the docs
// name them, not their fields.
var objectValues = []string{
	"pilot", "resources", "nodeSelector", "tolerations", "affinity", "podLabels", "podAnnotations",
	"serviceAnnotations", "serviceAccountAnnotations", "meshConfig", "updateStrategy", "env",
	"excludeNamespaces", "global.imagePullSecrets",
}

// TestDocsListValues checks that docs/install.md names every value of
// every chart.
func TestDocsListValues(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := string(data)
	for _, name := range Order {
		_, section, _ := strings.Cut(docs, "\n### "+name+"\n")
		section, _, _ = strings.Cut(section, "\n### ")
		if section == "" {
			t.Errorf("docs/install.md has no values section for %s", name)
			continue
		}
		for _, key := range valueKeys(loadChart(t, name).Values, "") {
			if !strings.Contains(section, "`"+key+"`") && !strings.Contains(section, "`"+key+".") {
				t.Errorf("docs/install.md does not list the %s value %s", name, key)
			}
		}
	}
}

func valueKeys(values map[string]any, prefix string) []string {
	var keys []string
	for k, v := range values {
		key := prefix + k
		if m, ok := v.(map[string]any); ok && len(m) > 0 && !slices.Contains(objectValues, key) {
			keys = append(keys, valueKeys(m, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}
