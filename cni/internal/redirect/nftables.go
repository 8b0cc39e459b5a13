package redirect

import (
	"fmt"
	"net/netip"
	"strings"
)

// NFTables is the nftables mode: one table of NAT rules in the pod's
// network namespace, written over netlink. It is for kernels without the
// eBPF features the eBPF mode needs; it needs nf_tables with NAT (Linux
// 5.2 for NAT in an inet table).
//
// Outbound TCP is redirected (NAT) to ztunnel's 15001 on 127.0.0.1, which
// recovers the original destination with SO_ORIGINAL_DST; inbound TCP to
// 15006 on the pod's address. Nothing else is installed: ztunnel's inbound
// path connects to the application from the pod's own address with its
// mark, without a spoofed source, so the replies are local anyway and no
// connmark, ip rule or route is needed to bring them back.
//
// IPv6 is redirected like IPv4 (to [::1]:15001, and to 15006) when the
// pod has an IPv6 address, and left alone otherwise. ztunnel listens on
// IPv4 only for now, so a dual-stack pod's IPv6 connections are refused
// rather than leaving the mesh unseen.
type NFTables struct{}

var _ Mode = NFTables{}

// Name is "nftables".
func (NFTables) Name() string { return "nftables" }

// NFTablesTable is the inet table the nftables mode owns in each pod's
// namespace; nothing else in the namespace is touched.
const NFTablesTable = "ambient-mesh"

// Protocol numbers as nftables matches them, spelled out so that the plan
// below builds and tests on every OS.
const (
	nfprotoIPv4 = 2  // NFPROTO_IPV4
	nfprotoIPv6 = 10 // NFPROTO_IPV6
	protoTCP    = 6  // IPPROTO_TCP
	protoUDP    = 17 // IPPROTO_UDP
)

// nftHook is a NAT base chain's hook.
type nftHook int

const (
	hookPrerouting nftHook = iota // inbound: packets arriving at the pod
	hookOutput                    // outbound: packets the pod sends
)

// nftChain is one base chain of the table. Its chains are named for
// their hooks.
type nftChain struct {
	hook  nftHook
	rules []nftRule
}

func (c nftChain) name() string {
	if c.hook == hookPrerouting {
		return "prerouting"
	}
	return "output"
}

// nftRule is one rule, in the few shapes the redirection needs: every set
// field must match, then the packet is redirected to port redirect, or
// accepted (left alone) if redirect is zero. The fields match in the order
// they are declared.
type nftRule struct {
	mark     bool       // meta mark & MarkMask == ZtunnelMark
	nfproto  uint8      // meta nfproto; 0: any
	oifLo    bool       // leaves through the loopback device
	saddr    netip.Addr // ip saddr or ip6 saddr
	l4proto  uint8      // meta l4proto; 0: any
	dport    uint16     // with l4proto
	redirect uint16
}

// nftPlan is the table's content for a pod. It is a pure function of cfg,
// so the rules are tested without a kernel.
func nftPlan(cfg Config) []nftChain {
	v6 := false
	for _, ip := range cfg.PodIPs {
		if ip.Unmap().Is6() {
			v6 = true
		}
	}
	// Both chains start the same: ztunnel's own traffic is never touched,
	// and neither is IPv6 unless the pod has it.
	head := func() []nftRule {
		rs := []nftRule{{mark: true}}
		if !v6 {
			rs = append(rs, nftRule{nfproto: nfprotoIPv6})
		}
		return rs
	}

	in := head()
	in = append(in,
		nftRule{saddr: ProbeSource},                  // kubelet probes, SNATed on the node
		nftRule{l4proto: protoTCP, dport: HBONEPort}, // ztunnel serves HBONE itself
		nftRule{l4proto: protoTCP, redirect: InboundPort},
	)

	out := head()
	// Whatever stays inside the pod (127.0.0.1, and the pod's own
	// addresses) is left alone.
	out = append(out, nftRule{oifLo: true})
	if cfg.DNSCapture {
		out = append(out,
			nftRule{l4proto: protoUDP, dport: 53, redirect: DNSPort},
			nftRule{l4proto: protoTCP, dport: 53, redirect: DNSPort},
		)
	}
	out = append(out, nftRule{l4proto: protoTCP, redirect: OutboundPort})

	return []nftChain{{hook: hookPrerouting, rules: in}, {hook: hookOutput, rules: out}}
}

// nftText renders the plan the way `nft list table inet ambient-mesh`
// shows it, for golden files, logs and comparing with what the kernel
// holds.
func nftText(chains []nftChain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", NFTablesTable)
	for i, c := range chains {
		if i > 0 {
			b.WriteString("\n")
		}
		// nft names priority -100 "dstnat" only at the prerouting hook.
		prio := "dstnat"
		if c.hook == hookOutput {
			prio = "-100"
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.name())
		fmt.Fprintf(&b, "\t\ttype nat hook %s priority %s; policy accept;\n", c.name(), prio)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// String is the rule in nft syntax.
func (r nftRule) String() string {
	var parts []string
	if r.mark {
		parts = append(parts, fmt.Sprintf("meta mark & 0x%08x == 0x%08x", MarkMask, ZtunnelMark))
	}
	switch r.nfproto {
	case nfprotoIPv4:
		parts = append(parts, "meta nfproto ipv4")
	case nfprotoIPv6:
		parts = append(parts, "meta nfproto ipv6")
	}
	if r.oifLo {
		parts = append(parts, `oif "lo"`)
	}
	if r.saddr.IsValid() {
		family := "ip"
		if r.saddr.Is6() {
			family = "ip6"
		}
		parts = append(parts, fmt.Sprintf("%s saddr %s", family, r.saddr))
	}
	proto := map[uint8]string{protoTCP: "tcp", protoUDP: "udp"}[r.l4proto]
	switch {
	case r.l4proto != 0 && r.dport != 0:
		parts = append(parts, fmt.Sprintf("%s dport %d", proto, r.dport))
	case r.l4proto != 0:
		parts = append(parts, "meta l4proto "+proto)
	}
	if r.redirect != 0 {
		parts = append(parts, fmt.Sprintf("redirect to :%d", r.redirect))
	} else {
		parts = append(parts, "accept")
	}
	return strings.Join(parts, " ")
}
