package redirect

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	vnetlink "github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/bpf"
	"github.com/ambient-mesh/mesh/pkg/netns"
)

// What the eBPF mode installs in a pod's namespace besides its programs:
// the programs mark the pod's outbound packets with RedirectMark before
// turning them back in through lo, and a policy route makes packets with
// that mark local, so that they reach ztunnel's listener rather than being
// forwarded. The values must match bpf/redirect.c.
const (
	RedirectMark  = 0x53a
	RedirectTable = 1338
	// RedirectRulePriority places the rule after the local table's and
	// before main's.
	RedirectRulePriority = 1338

	// The tc filters' priority and handle, and their names' prefix, by
	// which Remove recognises them.
	filterPriority = 0x1539
	filterHandle   = 0x1539
	filterPrefix   = "ambient_"
)

// ErrEBPFUnsupported is returned (wrapped) when the kernel lacks what the
// eBPF mode needs; the nftables mode is the fallback.
var ErrEBPFUnsupported = errors.New("kernel lacks eBPF redirection support")

// EBPF redirects with tc programs attached inside the pod's namespace: see
// docs/architecture/redirection.md.
type EBPF struct {
	Log *slog.Logger
}

// NewEBPF returns the eBPF mode; log may be nil.
func NewEBPF(log *slog.Logger) *EBPF {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EBPF{Log: log}
}

// Name implements Mode.
func (*EBPF) Name() string { return "ebpf" }

// ProbeEBPF checks that this kernel can run the eBPF mode: it loads the
// programs (the verifier refuses helpers the kernel lacks: bpf_sk_assign,
// bpf_skc_lookup_tcp) and applies and removes the mode in a scratch
// network namespace (clsact, cls_bpf, the policy route). Failures wrap
// ErrEBPFUnsupported; the nftables mode is the fallback.
func ProbeEBPF() error {
	objs, err := loadPrograms(Config{}, 1)
	if err != nil {
		return err
	}
	objs.Close()
	ns, err := netns.New()
	if err != nil {
		return fmt.Errorf("scratch netns: %w", err)
	}
	defer ns.Close()
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
	m := NewEBPF(nil)
	if err := m.Apply(path, Config{DNSCapture: true}); err != nil {
		return fmt.Errorf("%w: %w", ErrEBPFUnsupported, err)
	}
	return m.Remove(path)
}

func loadPrograms(cfg Config, loIndex int) (*bpf.RedirectObjects, error) {
	spec, err := bpf.LoadRedirect()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[bpf.RedirectVarDnsCapture].Set(boolByte(cfg.DNSCapture)); err != nil {
		return nil, fmt.Errorf("set dns_capture: %w", err)
	}
	if err := spec.Variables[bpf.RedirectVarLoopbackIfindex].Set(uint32(loIndex)); err != nil {
		return nil, fmt.Errorf("set loopback_ifindex: %w", err)
	}
	var objs bpf.RedirectObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) || errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("load redirection programs: %w: %w", ErrEBPFUnsupported, err)
		}
		return nil, fmt.Errorf("load redirection programs: %w", err)
	}
	return &objs, nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Apply implements Mode.
func (m *EBPF) Apply(netnsPath string, cfg Config) error {
	ns, err := netns.Open(netnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := vnetlink.NewHandleAt(vnetns.NsHandle(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	if err := m.apply(ns, h, cfg); err != nil {
		if rerr := remove(ns, h); rerr != nil {
			m.Log.Warn("ebpf redirection: cleanup after failed apply", "netns", netnsPath, "error", rerr)
		}
		return fmt.Errorf("ebpf redirection in %s: %w", netnsPath, err)
	}
	m.Log.Debug("ebpf redirection applied", "netns", netnsPath, "dns", cfg.DNSCapture)
	return nil
}

func (m *EBPF) apply(ns *netns.NS, h *vnetlink.Handle, cfg Config) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	objs, err := loadPrograms(cfg, lo.Attrs().Index)
	if err != nil {
		return err
	}
	// The filters hold their own references on the programs.
	defer objs.Close()

	// In order: the route, so looped-back packets are delivered; then
	// lo, which assigns them; then the pod's interfaces, egress last,
	// since it starts sending packets in through lo.
	if err := ensureRoute(h, lo.Attrs().Index); err != nil {
		return err
	}
	if err := setAcceptLocal(ns, "1"); err != nil {
		return err
	}
	if err := prepareHandoff(ns); err != nil {
		return err
	}
	if err := attach(h, lo, vnetlink.HANDLE_MIN_INGRESS, objs.LoopbackIngress, "loopback_ingress"); err != nil {
		return err
	}
	links, err := podLinks(h)
	if err != nil {
		return err
	}
	for _, l := range links {
		if err := attach(h, l, vnetlink.HANDLE_MIN_INGRESS, objs.PodIngress, "pod_ingress"); err != nil {
			return err
		}
	}
	for _, l := range links {
		if err := attach(h, l, vnetlink.HANDLE_MIN_EGRESS, objs.PodEgress, "pod_egress"); err != nil {
			return err
		}
	}
	return nil
}

// podLinks are the pod's Ethernet interfaces: the programs parse Ethernet
// frames, and every CNI plugin in common use gives pods veths.
func podLinks(h *vnetlink.Handle) ([]vnetlink.Link, error) {
	all, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var links []vnetlink.Link
	for _, l := range all {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.EncapType != "ether" {
			continue
		}
		links = append(links, l)
	}
	return links, nil
}

func attach(h *vnetlink.Handle, l vnetlink.Link, parent uint32, prog *ebpf.Program, name string) error {
	q := &vnetlink.GenericQdisc{
		QdiscAttrs: vnetlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    vnetlink.MakeHandle(0xffff, 0),
			Parent:    vnetlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("clsact on %s: %w", l.Attrs().Name, err)
	}
	f := &vnetlink.BpfFilter{
		FilterAttrs: vnetlink.FilterAttrs{
			LinkIndex: l.Attrs().Index,
			Parent:    parent,
			Handle:    filterHandle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  filterPriority,
		},
		Fd:           prog.FD(),
		Name:         filterPrefix + name,
		DirectAction: true,
	}
	if err := h.FilterReplace(f); err != nil {
		return fmt.Errorf("attach %s on %s: %w", name, l.Attrs().Name, err)
	}
	return nil
}

func redirectRule() *vnetlink.Rule {
	r := vnetlink.NewRule()
	r.Family = unix.AF_INET
	r.Mark = RedirectMark
	mask := uint32(MarkMask)
	r.Mask = &mask
	r.Table = RedirectTable
	r.Priority = RedirectRulePriority
	return r
}

func redirectRoute(loIndex int) *vnetlink.Route {
	return &vnetlink.Route{
		Dst:       &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		Type:      unix.RTN_LOCAL,
		Scope:     unix.RT_SCOPE_HOST,
		Table:     RedirectTable,
		LinkIndex: loIndex,
	}
}

func ourRules(h *vnetlink.Handle) ([]vnetlink.Rule, error) {
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	var ours []vnetlink.Rule
	for _, r := range rules {
		if r.Table == RedirectTable && r.Priority == RedirectRulePriority {
			ours = append(ours, r)
		}
	}
	return ours, nil
}

func ensureRoute(h *vnetlink.Handle, loIndex int) error {
	if err := h.RouteReplace(redirectRoute(loIndex)); err != nil {
		return fmt.Errorf("route table %d: %w", RedirectTable, err)
	}
	ours, err := ourRules(h)
	if err != nil {
		return err
	}
	want := redirectRule()
	for _, r := range ours {
		if r.Mark == want.Mark && r.Mask != nil && *r.Mask == *want.Mask {
			return nil
		}
	}
	if err := h.RuleAdd(want); err != nil {
		return fmt.Errorf("rule fwmark %#x: %w", RedirectMark, err)
	}
	return nil
}

// Remove implements Mode.
func (m *EBPF) Remove(netnsPath string) error {
	ns, err := netns.Open(netnsPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := vnetlink.NewHandleAt(vnetns.NsHandle(int(ns.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	if err := remove(ns, h); err != nil {
		return fmt.Errorf("remove ebpf redirection in %s: %w", netnsPath, err)
	}
	m.Log.Debug("ebpf redirection removed", "netns", netnsPath)
	return nil
}

// remove takes out every filter, clsact qdisc left empty, rule and route
// the mode installs, whatever is there; it goes on past errors.
func remove(ns *netns.NS, h *vnetlink.Handle) error {
	var errs []error
	if err := setAcceptLocal(ns, "0"); err != nil {
		errs = append(errs, err)
	}
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		left := 0
		for _, parent := range []uint32{vnetlink.HANDLE_MIN_INGRESS, vnetlink.HANDLE_MIN_EGRESS} {
			filters, err := h.FilterList(l, parent)
			if err != nil {
				// No clsact on this link.
				continue
			}
			for _, f := range filters {
				bf, ok := f.(*vnetlink.BpfFilter)
				if ok && f.Attrs().Priority == filterPriority && strings.HasPrefix(bf.Name, filterPrefix) {
					if err := h.FilterDel(f); err != nil {
						errs = append(errs, fmt.Errorf("detach %s from %s: %w", bf.Name, l.Attrs().Name, err))
						left++
					}
					continue
				}
				left++
			}
		}
		if left == 0 {
			removeEmptyClsact(h, l)
		}
	}
	ours, err := ourRules(h)
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range ours {
		if err := h.RuleDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete rule: %w", err))
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &vnetlink.Route{Table: RedirectTable}, vnetlink.RT_FILTER_TABLE)
	if err != nil {
		errs = append(errs, fmt.Errorf("list routes: %w", err))
	}
	for _, r := range routes {
		if err := h.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete route: %w", err))
		}
	}
	return errors.Join(errs...)
}

// acceptLocal is lo's accept_local sysctl. A looped-back packet has lost
// its route, so the kernel routes it again on the way in, and without
// accept_local it drops it as a martian: its source, the pod's own
// address, is local but it did not come from the pod's own output path.
const acceptLocal = "/proc/sys/net/ipv4/conf/lo/accept_local"

func setAcceptLocal(ns *netns.NS, v string) error {
	// /proc/sys/net shows the namespace of the thread that opens it.
	err := ns.Do(func() error { return os.WriteFile(acceptLocal, []byte(v), 0o644) })
	if err != nil {
		return fmt.Errorf("set lo accept_local: %w", err)
	}
	return nil
}

func removeEmptyClsact(h *vnetlink.Handle, l vnetlink.Link) {
	qdiscs, err := h.QdiscList(l)
	if err != nil {
		return
	}
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			_ = h.QdiscDel(q)
		}
	}
}
