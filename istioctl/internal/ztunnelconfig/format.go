package ztunnelconfig

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// Sections are what ztunnel-config shows.
var Sections = []string{"workloads", "services", "policies", "certificates", "connections", "all"}

// Output formats.
const (
	OutputShort = "short"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// Options select and shape the output.
type Options struct {
	// Namespace, when set, keeps only what belongs to that namespace.
	Namespace string
	// Output is short, json or yaml.
	Output string
	// Now is the time ages and validity are computed against.
	Now time.Time
}

// Write prints section of d to w.
func Write(w io.Writer, d *Dump, section string, o Options) error {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	switch o.Output {
	case "", OutputShort:
		return writeShort(w, d, section, o)
	case OutputJSON, OutputYAML:
		v, err := structured(d, section, o)
		if err != nil {
			return err
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if o.Output == OutputYAML {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	default:
		return fmt.Errorf("output format %q: want short, json or yaml", o.Output)
	}
}

func writeShort(w io.Writer, d *Dump, section string, o Options) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	switch section {
	case "workloads":
		workloadTable(tw, d, o)
	case "services":
		serviceTable(tw, d, o)
	case "policies":
		policyTable(tw, d, o)
	case "certificates":
		certificateTable(tw, d, o)
	case "connections":
		connectionTable(tw, d, o)
	case "all":
		for i, s := range []func(io.Writer, *Dump, Options){workloadTable, serviceTable, policyTable, certificateTable, connectionTable} {
			if i > 0 {
				fmt.Fprintln(tw)
			}
			s(tw, d, o)
		}
	default:
		return fmt.Errorf("unknown section %q: want one of %s", section, strings.Join(Sections, ", "))
	}
	return tw.Flush()
}

func keep(o Options, ns string) bool { return o.Namespace == "" || o.Namespace == ns }

func workloadTable(w io.Writer, d *Dump, o Options) {
	fmt.Fprintln(w, "NAMESPACE\tPOD NAME\tADDRESS\tNODE\tWAYPOINT\tPROTOCOL")
	for _, wl := range d.Workloads {
		if !keep(o, wl.GetNamespace()) {
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", wl.GetNamespace(), wl.GetName(), workloadAddresses(wl.Workload),
			dash(wl.GetNode()), waypointName(wl.GetWaypoint()), protocol(wl.GetTunnelProtocol()))
	}
}

func serviceTable(w io.Writer, d *Dump, o Options) {
	fmt.Fprintln(w, "NAMESPACE\tSERVICE NAME\tSERVICE VIP\tWAYPOINT\tENDPOINTS")
	for _, s := range d.Services {
		if !keep(o, s.GetNamespace()) {
			continue
		}
		healthy, total := endpoints(d, s.Service)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d/%d\n", s.GetNamespace(), s.GetName(), serviceVIPs(s.Service),
			waypointName(s.GetWaypoint()), healthy, total)
	}
}

func policyTable(w io.Writer, d *Dump, o Options) {
	fmt.Fprintln(w, "NAMESPACE\tPOLICY NAME\tACTION\tSCOPE")
	for _, p := range d.Policies {
		if !keep(o, p.GetNamespace()) {
			continue
		}
		a := action(p.GetAction())
		if p.GetDryRun() {
			a += " (dry-run)" // evaluated and logged, not enforced
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.GetNamespace(), p.GetName(), a, scope(p.GetScope()))
	}
}

func certificateTable(w io.Writer, d *Dump, o Options) {
	fmt.Fprintln(w, "CERTIFICATE NAME\tTYPE\tSTATUS\tVALID CERT\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE")
	for _, c := range d.Certificates {
		if !keep(o, identityNamespace(c.Identity)) {
			continue
		}
		for _, r := range certRows(c, o.Now) {
			fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\t%s\t%s\n", c.Identity, r.typ, r.status, r.valid, r.serial, r.notAfter, r.notBefore)
		}
	}
}

func connectionTable(w io.Writer, d *Dump, o Options) {
	pods := map[string]PodInfo{}
	for _, p := range d.Pods {
		pods[p.UID] = p
	}
	fmt.Fprintln(w, "WORKLOAD\tDIRECTION\tLOCAL\tREMOTE\tREMOTE IDENTITY\tPROTOCOL\tAGE")
	for _, c := range d.Connections {
		p, known := pods[c.Pod]
		workload := c.Pod
		if known {
			workload = p.Name + "." + p.Namespace
		}
		if o.Namespace != "" && (!known || p.Namespace != o.Namespace) {
			continue
		}
		dir, local, remote, id, proto := "Outbound", c.Src, c.Dst, c.DstIdentity, "TCP"
		switch c.Direction {
		case "outbound":
			if c.Via == "hbone" || c.Via == "waypoint" {
				proto = "HBONE"
			}
		case "inbound":
			dir, local, remote, id, proto = "Inbound", c.Dst, c.Src, c.SrcIdentity, "HBONE"
		case "inbound_plaintext":
			dir, local, remote, id = "Inbound", c.Dst, c.Src, c.SrcIdentity
		default:
			dir = c.Direction
		}
		if c.Via == "waypoint" {
			proto += " (waypoint)"
		}
		age := "-"
		if !c.Started.IsZero() {
			age = shortDuration(o.Now.Sub(c.Started))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(workload), dir, dash(local), dash(remote), dash(id), proto, age)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func workloadAddresses(w *workloadapi.Workload) string {
	var out []string
	for _, a := range w.GetAddresses() {
		out = append(out, ipString(a))
	}
	if len(out) == 0 {
		if w.GetHostname() != "" {
			return w.GetHostname()
		}
		return "None"
	}
	return strings.Join(out, ",")
}

func ipString(b []byte) string {
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		return fmt.Sprintf("<invalid %d-byte address>", len(b))
	}
	return ip.Unmap().String()
}

func serviceVIPs(s *workloadapi.Service) string {
	var out []string
	for _, a := range s.GetAddresses() {
		out = append(out, ipString(a.GetAddress()))
	}
	if len(out) == 0 {
		return "None"
	}
	return strings.Join(out, ",")
}

// waypointName is what the tables show for a waypoint: the service's name
// (the first label of its hostname), or its address.
func waypointName(g *workloadapi.GatewayAddress) string {
	if g == nil {
		return "None"
	}
	if h := g.GetHostname(); h != nil {
		name, _, _ := strings.Cut(h.GetHostname(), ".")
		if name == "" {
			return "None"
		}
		return name
	}
	if a := g.GetAddress(); a != nil {
		return ipString(a.GetAddress())
	}
	return "None"
}

func protocol(p workloadapi.TunnelProtocol) string {
	if p == workloadapi.TunnelProtocol_HBONE {
		return "HBONE"
	}
	return "TCP"
}

// endpoints counts the workloads that back s, and how many of them are healthy.
func endpoints(d *Dump, s *workloadapi.Service) (healthy, total int) {
	key := s.GetNamespace() + "/" + s.GetHostname()
	for _, w := range d.Workloads {
		if _, ok := w.GetServices()[key]; !ok {
			continue
		}
		total++
		if w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY {
			healthy++
		}
	}
	return healthy, total
}

func action(a security.Action) string {
	switch a {
	case security.Action_ALLOW:
		return "Allow"
	case security.Action_DENY:
		return "Deny"
	default:
		return a.String()
	}
}

func scope(s security.Scope) string {
	switch s {
	case security.Scope_GLOBAL:
		return "Global"
	case security.Scope_NAMESPACE:
		return "Namespace"
	case security.Scope_WORKLOAD_SELECTOR:
		return "WorkloadSelector"
	default:
		return s.String()
	}
}

// identityNamespace returns NS of spiffe://<td>/ns/<NS>/sa/<SA>.
func identityNamespace(id string) string {
	_, rest, ok := strings.Cut(id, "/ns/")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, "/")
	return ns
}

type certRow struct {
	typ, status, serial, notAfter, notBefore string
	valid                                    bool
}

func certRows(c CertInfo, now time.Time) []certRow {
	if len(c.Chain) == 0 {
		// No chain: show what the dump says of the leaf.
		valid := !now.Before(c.NotBefore) && now.Before(c.NotAfter)
		return []certRow{{typ: "Leaf", status: status(valid), serial: dash(c.Serial), notAfter: timeString(c.NotAfter), notBefore: timeString(c.NotBefore), valid: valid}}
	}
	var rows []certRow
	for i, p := range c.Chain {
		typ := "Intermediate"
		switch {
		case i == 0:
			typ = "Leaf"
		case i == len(c.Chain)-1:
			typ = "Root"
		}
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			rows = append(rows, certRow{typ: typ, status: "Invalid PEM", serial: "-", notAfter: "-", notBefore: "-"})
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			rows = append(rows, certRow{typ: typ, status: "Unparseable", serial: "-", notAfter: "-", notBefore: "-"})
			continue
		}
		valid := !now.Before(cert.NotBefore) && now.Before(cert.NotAfter)
		rows = append(rows, certRow{
			typ: typ, status: status(valid), valid: valid, serial: cert.SerialNumber.Text(16),
			notAfter: timeString(cert.NotAfter), notBefore: timeString(cert.NotBefore),
		})
	}
	return rows
}

func status(valid bool) string {
	if valid {
		return "Available"
	}
	return "Expired"
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// shortDuration formats d like kubectl's AGE column.
func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// structured is what -o json|yaml prints: the dump's own JSON of the
// section, filtered by namespace.
func structured(d *Dump, section string, o Options) (any, error) {
	workloads := func() []json.RawMessage {
		out := []json.RawMessage{}
		for _, w := range d.Workloads {
			if keep(o, w.GetNamespace()) {
				out = append(out, d.raw.Workloads[w.Key])
			}
		}
		return out
	}
	services := func() []json.RawMessage {
		out := []json.RawMessage{}
		for _, s := range d.Services {
			if keep(o, s.GetNamespace()) {
				out = append(out, d.raw.Services[s.Key])
			}
		}
		return out
	}
	policies := func() []json.RawMessage {
		out := []json.RawMessage{}
		for _, p := range d.Policies {
			if keep(o, p.GetNamespace()) {
				out = append(out, d.raw.Policies[p.Key])
			}
		}
		return out
	}
	certificates := func() []CertInfo {
		out := []CertInfo{}
		for _, c := range d.Certificates {
			if keep(o, identityNamespace(c.Identity)) {
				out = append(out, c)
			}
		}
		return out
	}
	pods := func() []PodInfo {
		out := []PodInfo{}
		for _, p := range d.Pods {
			if keep(o, p.Namespace) {
				out = append(out, p)
			}
		}
		return out
	}
	connections := func() []ConnInfo {
		ns := map[string]string{}
		for _, p := range d.Pods {
			ns[p.UID] = p.Namespace
		}
		out := []ConnInfo{}
		for _, c := range d.Connections {
			if keep(o, ns[c.Pod]) {
				out = append(out, c)
			}
		}
		return out
	}
	switch section {
	case "workloads":
		return workloads(), nil
	case "services":
		return services(), nil
	case "policies":
		return policies(), nil
	case "certificates":
		return certificates(), nil
	case "connections":
		return connections(), nil
	case "all":
		return map[string]any{
			"workloads": workloads(), "services": services(), "policies": policies(),
			"certificates": certificates(), "pods": pods(), "connections": connections(),
			"resource_versions": d.ResourceVersions,
		}, nil
	default:
		return nil, fmt.Errorf("unknown section %q: want one of %s", section, strings.Join(Sections, ", "))
	}
}
