package policy

import "fmt"

// DefaultRootNamespace is Istio's default root namespace: policies there
// without a selector apply to the whole mesh.
const DefaultRootNamespace = "istio-system"

// Issue names one field of the input by its path (for example
// "rules[0].to[0].operation.methods") and says why it was not enforced.
type Issue struct {
	Path   string
	Reason string
}

func (i Issue) String() string { return i.Path + ": " + i.Reason }

// Report tells the caller what the translation did not carry over, so it
// can set a status condition, and which workloads the result applies to.
type Report struct {
	// Selector holds the resource's workload selector labels when the
	// result is WORKLOAD_SELECTOR scoped; the caller lists the policy in
	// the Workload of every pod the labels match. An empty map selects
	// every workload in the namespace, as in Istio.
	Selector map[string]string
	// Skipped says why no Authorization was produced (ok is false).
	Skipped string
	// Ignored lists fields that L4 cannot enforce; each made the rule
	// holding it fail closed.
	Ignored []Issue
	// Invalid lists values that did not parse; each made the rule holding
	// it fail closed (or, for the dry-run annotation, the policy enforced).
	Invalid []Issue
	// DryRun is set when the result is a dry-run policy: ztunnel logs
	// what it would decide and enforces nothing of it.
	DryRun bool
}

func (r *Report) ignore(path, format string, args ...any) {
	r.Ignored = append(r.Ignored, Issue{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (r *Report) invalid(path, format string, args ...any) {
	r.Invalid = append(r.Invalid, Issue{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func copyLabels(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
