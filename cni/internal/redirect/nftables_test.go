package redirect

import (
	"net/netip"
	"testing"
)

// The tables as `nft list table inet ambient-mesh` shows them. The kernel
// test (nftables_kernel_linux_test.go) checks that the kernel lists the
// installed rules the same way, so these are also what a node shows.
var (
	podV4 = netip.MustParseAddr("10.200.1.10")
	podV6 = netip.MustParseAddr("fd00:200:1::10")

	nftV4 = `table inet ambient-mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		meta mark & 0x00000fff == 0x00000539 accept
		meta nfproto ipv6 accept
		ip saddr 169.254.7.127 accept
		tcp dport 15008 accept
		meta l4proto tcp redirect to :15006
	}

	chain output {
		type nat hook output priority -100; policy accept;
		meta mark & 0x00000fff == 0x00000539 accept
		meta nfproto ipv6 accept
		oif "lo" accept
		meta l4proto tcp redirect to :15001
	}
}
`
	nftV4DNS = `table inet ambient-mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		meta mark & 0x00000fff == 0x00000539 accept
		meta nfproto ipv6 accept
		ip saddr 169.254.7.127 accept
		tcp dport 15008 accept
		meta l4proto tcp redirect to :15006
	}

	chain output {
		type nat hook output priority -100; policy accept;
		meta mark & 0x00000fff == 0x00000539 accept
		meta nfproto ipv6 accept
		oif "lo" accept
		udp dport 53 redirect to :15053
		tcp dport 53 redirect to :15053
		meta l4proto tcp redirect to :15001
	}
}
`
	nftDualStackDNS = `table inet ambient-mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		meta mark & 0x00000fff == 0x00000539 accept
		ip saddr 169.254.7.127 accept
		tcp dport 15008 accept
		meta l4proto tcp redirect to :15006
	}

	chain output {
		type nat hook output priority -100; policy accept;
		meta mark & 0x00000fff == 0x00000539 accept
		oif "lo" accept
		udp dport 53 redirect to :15053
		tcp dport 53 redirect to :15053
		meta l4proto tcp redirect to :15001
	}
}
`
)

var nftCases = []struct {
	name string
	cfg  Config
	want string
}{
	{"ipv4", Config{PodIPs: []netip.Addr{podV4}}, nftV4},
	{"ipv4-dns", Config{PodIPs: []netip.Addr{podV4}, DNSCapture: true}, nftV4DNS},
	{"dual-stack-dns", Config{PodIPs: []netip.Addr{podV4, podV6}, DNSCapture: true}, nftDualStackDNS},
	{"ipv6-only-dns", Config{PodIPs: []netip.Addr{podV6}, DNSCapture: true}, nftDualStackDNS},
	// The plan depends on the addresses' families only, so a pod whose
	// addresses are not known yet is treated as IPv4-only.
	{"no-addresses", Config{}, nftV4},
}

func TestNFTPlan(t *testing.T) {
	for _, tc := range nftCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := nftText(nftPlan(tc.cfg)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestNFTPlanIPv4MappedIsIPv4(t *testing.T) {
	cfg := Config{PodIPs: []netip.Addr{netip.AddrFrom16(podV4.As16())}}
	if got := nftText(nftPlan(cfg)); got != nftV4 {
		t.Errorf("an IPv4-mapped pod address turned on IPv6 capture:\n%s", got)
	}
}

func TestNFTRuleString(t *testing.T) {
	for _, tc := range []struct {
		r    nftRule
		want string
	}{
		{nftRule{nfproto: nfprotoIPv4}, "meta nfproto ipv4 accept"},
		{nftRule{saddr: netip.MustParseAddr("fd00::7")}, "ip6 saddr fd00::7 accept"},
		{nftRule{l4proto: protoUDP}, "meta l4proto udp accept"},
		{nftRule{l4proto: protoTCP, dport: 80, redirect: 8080}, "tcp dport 80 redirect to :8080"},
	} {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.r, got, tc.want)
		}
	}
}
