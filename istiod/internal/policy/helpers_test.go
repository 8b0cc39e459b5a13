package policy

import (
	"net/netip"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

func exact(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: s}}
}

func suffix(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: s}}
}

func presence() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}

func strs(ms ...*security.StringMatch) []*security.StringMatch { return ms }

func cidr(s string) *security.Address {
	p := netip.MustParsePrefix(s)
	return &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

func addrs(ss ...string) []*security.Address {
	var out []*security.Address
	for _, s := range ss {
		out = append(out, cidr(s))
	}
	return out
}

func rules(ms ...*security.Match) *security.Rules { return &security.Rules{Matches: ms} }

func group(rs ...*security.Rules) *security.Group { return &security.Group{Rules: rs} }

func groups(gs ...*security.Group) []*security.Group { return gs }

// checkAuthz compares with proto.Equal and prints both sides on mismatch.
func checkAuthz(t *testing.T, got, want *security.Authorization) {
	t.Helper()
	if !proto.Equal(got, want) {
		opts := prototext.MarshalOptions{Multiline: true}
		t.Errorf("authorization mismatch\n--- got\n%s\n--- want\n%s", opts.Format(got), opts.Format(want))
	}
}

func paths(is []Issue) []string {
	var out []string
	for _, i := range is {
		out = append(out, i.Path)
	}
	return out
}

func checkPaths(t *testing.T, what string, got []Issue, want []string) {
	t.Helper()
	if !slices.Equal(paths(got), want) {
		t.Errorf("%s paths = %q, want %q (%v)", what, paths(got), want, got)
	}
}
