package policy

import (
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// stringMatch converts Istio's wildcard syntax: "*" alone means any
// non-empty value, a leading "*" a suffix match, a trailing "*" a prefix
// match. Principals keep Istio's form ("cluster.local/ns/x/sa/y"): ztunnel
// compares them without the spiffe:// scheme.
func stringMatch(v string) *security.StringMatch {
	switch {
	case v == "*":
		return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
	case strings.HasPrefix(v, "*"):
		return &security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: v[:len(v)-1]}}
	default:
		return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: v}}
	}
}

func stringMatches(vs []string) []*security.StringMatch {
	var out []*security.StringMatch
	for _, v := range vs {
		out = append(out, stringMatch(v))
	}
	return out
}

// parseAddress accepts a CIDR or a bare IP (a /32 or /128). Host bits are
// cleared and IPv4-mapped IPv6 is unmapped, because ztunnel compares
// against unmapped connection addresses.
func parseAddress(s string) (*security.Address, bool) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return nil, false
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	p = p.Masked()
	return &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}, true
}

// parsePort accepts a decimal port number in 0..65535.
func parsePort(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// parseServiceAccount accepts "ns/sa", or "sa" meaning the policy's own
// namespace, as Istio documents for source.serviceAccounts.
func parseServiceAccount(s, policyNS string) (*security.ServiceAccountMatch, bool) {
	ns, sa, found := strings.Cut(s, "/")
	if !found {
		ns, sa = policyNS, s
	}
	if ns == "" || sa == "" || strings.Contains(sa, "/") || strings.Contains(s, "*") {
		return nil, false
	}
	return &security.ServiceAccountMatch{Namespace: ns, ServiceAccount: sa}, true
}
