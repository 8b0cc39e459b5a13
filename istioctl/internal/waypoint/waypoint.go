// Package waypoint builds, lists and describes waypoints: Gateway API
// Gateways of class istio-waypoint with one HBONE listener.
package waypoint

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// Wire names of waypoints (see docs: PROTOCOLS.md, Waypoints).
const (
	GatewayClass = "istio-waypoint"
	DefaultName  = "waypoint"
	ListenerName = "mesh"
	ListenerPort = 15008
	Protocol     = "HBONE"

	LabelWaypointFor     = "istio.io/waypoint-for"
	LabelUseWaypoint     = "istio.io/use-waypoint"
	LabelGatewayName     = "gateway.networking.k8s.io/gateway-name"
	LabelRevision        = "istio.io/rev"
	conditionProgrammed  = "Programmed"
	defaultRevisionLabel = "default"
)

// GatewayGVR is the Gateway API Gateway resource.
var GatewayGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}

// TrafficTypes are the values of --for.
var TrafficTypes = []string{"service", "workload", "all", "none"}

// Validate checks a waypoint's name and traffic type.
func Validate(name, forType string) error {
	if name == "" {
		return fmt.Errorf("waypoint name is empty")
	}
	if name == "none" {
		return fmt.Errorf(`waypoint name "none" is reserved: it means "no waypoint" in %s labels`, LabelUseWaypoint)
	}
	if !slices.Contains(TrafficTypes, forType) {
		return fmt.Errorf("--for %q: want one of %s", forType, strings.Join(TrafficTypes, ", "))
	}
	return nil
}

// Gateway returns the waypoint Gateway named name in namespace.
func Gateway(name, namespace, forType string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "Gateway",
		"metadata": map[string]any{
			"name":      name,
			"namespace": namespace,
			"labels":    map[string]any{LabelWaypointFor: forType},
		},
		"spec": map[string]any{
			"gatewayClassName": GatewayClass,
			"listeners": []any{map[string]any{
				"name":     ListenerName,
				"port":     int64(ListenerPort),
				"protocol": Protocol,
			}},
		},
	}}
}

// YAML renders a Gateway as istioctl waypoint generate prints it.
func YAML(gw *unstructured.Unstructured) (string, error) {
	b, err := yaml.Marshal(gw.Object)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// IsWaypoint reports whether gw is of the waypoint class.
func IsWaypoint(gw *unstructured.Unstructured) bool {
	c, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
	return c == GatewayClass
}

// Condition is one of a Gateway's status conditions.
type Condition struct {
	Type, Status, Reason, Message string
}

// Conditions returns gw's status conditions.
func Conditions(gw *unstructured.Unstructured) []Condition {
	raw, _, _ := unstructured.NestedSlice(gw.Object, "status", "conditions")
	var out []Condition
	for _, r := range raw {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		out = append(out, Condition{Type: str("type"), Status: str("status"), Reason: str("reason"), Message: str("message")})
	}
	return out
}

// Programmed returns "True", "False" or "Unknown" for gw's Programmed
// condition, and the condition's reason and message when it is not True.
func Programmed(gw *unstructured.Unstructured) (string, string) {
	for _, c := range Conditions(gw) {
		if c.Type != conditionProgrammed {
			continue
		}
		if c.Status == "True" {
			return "True", ""
		}
		why := c.Reason
		if c.Message != "" {
			why += ": " + c.Message
		}
		return c.Status, why
	}
	return "Unknown", "no Programmed condition yet"
}

func revision(gw *unstructured.Unstructured) string {
	if r := gw.GetLabels()[LabelRevision]; r != "" {
		return r
	}
	return defaultRevisionLabel
}

// WriteList prints waypoints like istioctl waypoint list; with
// allNamespaces a NAMESPACE column comes first.
func WriteList(w io.Writer, gws []unstructured.Unstructured, allNamespaces bool) error {
	gws = slices.Clone(gws)
	slices.SortFunc(gws, func(a, b unstructured.Unstructured) int {
		if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
			return c
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := "NAME\tREVISION\tPROGRAMMED"
	if allNamespaces {
		head = "NAMESPACE\t" + head
	}
	fmt.Fprintln(tw, head)
	for i := range gws {
		gw := &gws[i]
		if !IsWaypoint(gw) {
			continue
		}
		prog, _ := Programmed(gw)
		row := fmt.Sprintf("%s\t%s\t%s", gw.GetName(), revision(gw), prog)
		if allNamespaces {
			row = gw.GetNamespace() + "\t" + row
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// WriteStatus prints each waypoint's conditions.
func WriteStatus(w io.Writer, gws []unstructured.Unstructured) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tSTATUS\tTYPE\tREASON\tMESSAGE")
	for i := range gws {
		gw := &gws[i]
		conds := Conditions(gw)
		if len(conds) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", gw.GetNamespace(), gw.GetName(), "Unknown", "-", "-", "no status yet (is istiod running?)")
		}
		for _, c := range conds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", gw.GetNamespace(), gw.GetName(), c.Status, c.Type, c.Reason, c.Message)
		}
	}
	return tw.Flush()
}

// EnrollDecision says what enrolling a namespace into waypoint name does,
// given the namespace's current istio.io/use-waypoint label.
func EnrollDecision(namespace, current, name string, overwrite bool) (change bool, err error) {
	switch {
	case current == name:
		return false, nil
	case current == "" || overwrite:
		return true, nil
	default:
		return false, fmt.Errorf("namespace %s already uses waypoint %q (label %s); use --overwrite to replace it with %q", namespace, current, LabelUseWaypoint, name)
	}
}
