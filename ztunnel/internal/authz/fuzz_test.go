package authz

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// FuzzCompile feeds arbitrary Authorization resources, as they arrive over
// xDS, through compilation and evaluation: no input may panic, and a
// resource that compiles must evaluate.
func FuzzCompile(f *testing.F) {
	seeds := []*security.Authorization{
		policy("p", security.Action_ALLOW, []*security.Rules{rule(&security.Match{Principals: []*security.StringMatch{exactM("cluster.local/ns/foo/sa/sleep")}, DestinationPorts: []uint32{80}})}),
		policy("d", security.Action_DENY, []*security.Rules{rule(&security.Match{NotSourceIps: []*security.Address{cidr("10.0.0.0/8")}, Namespaces: []*security.StringMatch{presenceM()}})}),
		policy("e", security.Action_ALLOW),
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	conns := []Conn{
		{Source: spiffe.Identity{TrustDomain: "cluster.local", Namespace: "foo", ServiceAccount: "sleep"}, Src: netip.MustParseAddrPort("10.0.0.1:1"), Dst: netip.MustParseAddrPort("10.0.1.1:80")},
		{Src: netip.MustParseAddrPort("[fd00::1]:1"), Dst: netip.MustParseAddrPort("[fd00::2]:443")},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a security.Authorization
		if proto.Unmarshal(data, &a) != nil {
			return
		}
		p, err := Compile(&a)
		if err != nil {
			return
		}
		for _, c := range conns {
			_ = p.Matches(c)
		}
		_ = Decide([]*Policy{p}, conns[0])
	})
}
