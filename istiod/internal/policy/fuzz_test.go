package policy

import (
	"fmt"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
)

// FuzzTranslateAuthorizationPolicy feeds arbitrary AuthorizationPolicy
// specs (wire-format bytes, as read from the API server) through the
// translation. It must not panic, and what it produces must be something
// ztunnel accepts: valid CIDRs, ports in range, no empty Match and no
// StringMatch without a type.
func FuzzTranslateAuthorizationPolicy(f *testing.F) {
	seeds := []*ap{
		{},
		{Rules: []*rule{{}}},
		{Action: denyAP, Rules: []*rule{{
			From: from(&source{Principals: []string{"*", "a*", "*b"}, IpBlocks: []string{"10.0.0.0/8", "::1"}, RequestPrincipals: []string{"x"}}),
			To:   to(&operation{Ports: []string{"80", "bad"}, Methods: []string{"GET"}}),
			When: []*cond{{Key: "source.ip", Values: []string{"1.2.3.4/33"}}, {Key: "destination.port", NotValues: []string{"65535"}}},
		}}},
		{Rules: []*rule{{From: from(&source{NotIpBlocks: []string{"::ffff:1.2.3.4/100"}, ServiceAccounts: []string{"ns/sa", "sa"}})}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "foo")
	}
	f.Fuzz(func(t *testing.T, data []byte, namespace string) {
		if !utf8.ValidString(namespace) {
			return // metadata from the API server is always UTF-8
		}
		spec := &securityv1beta1.AuthorizationPolicy{}
		if err := proto.Unmarshal(data, spec); err != nil {
			return
		}
		out, report, ok := TranslateAuthorizationPolicy(Input{Name: "p", Namespace: namespace, Spec: spec})
		if !ok {
			if out != nil || report.Skipped == "" {
				t.Fatalf("skipped with output %v, reason %q", out, report.Skipped)
			}
			return
		}
		if err := validate(out); err != nil {
			t.Fatalf("%v\n%v", err, out)
		}
		if _, err := proto.Marshal(out); err != nil {
			t.Fatalf("marshal output: %v", err)
		}
	})
}

// validate checks an Authorization the way ztunnel's compiler does, plus
// the no-empty-Match rule this package relies on.
func validate(a *security.Authorization) error {
	for gi, g := range a.GetGroups() {
		for ri, r := range g.GetRules() {
			if len(r.GetMatches()) == 0 {
				return fmt.Errorf("groups[%d].rules[%d]: no matches", gi, ri)
			}
			for mi, m := range r.GetMatches() {
				at := fmt.Sprintf("groups[%d].rules[%d].matches[%d]", gi, ri, mi)
				if proto.Size(m) == 0 {
					return fmt.Errorf("%s: empty match", at)
				}
				for _, as := range [][]*security.Address{m.GetSourceIps(), m.GetNotSourceIps(), m.GetDestinationIps(), m.GetNotDestinationIps()} {
					for _, ad := range as {
						n := len(ad.GetAddress())
						if (n != 4 && n != 16) || ad.GetLength() > uint32(8*n) {
							return fmt.Errorf("%s: bad address %x/%d", at, ad.GetAddress(), ad.GetLength())
						}
					}
				}
				for _, ps := range [][]uint32{m.GetDestinationPorts(), m.GetNotDestinationPorts()} {
					for _, p := range ps {
						if p > 65535 {
							return fmt.Errorf("%s: port %d", at, p)
						}
					}
				}
				for _, ss := range [][]*security.StringMatch{m.GetPrincipals(), m.GetNotPrincipals(), m.GetNamespaces(), m.GetNotNamespaces()} {
					for _, s := range ss {
						if s.GetMatchType() == nil {
							return fmt.Errorf("%s: string match without a type", at)
						}
					}
				}
			}
		}
	}
	return nil
}

// FuzzBuildPeerAuthentication feeds arbitrary PeerAuthentication specs,
// as a mesh-wide, a namespace and a workload resource, through Build. It
// must not panic, every resource must be one ztunnel accepts, and every
// name a workload lists must be served.
func FuzzBuildPeerAuthentication(f *testing.F) {
	strict := &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}
	seeds := []*securityv1beta1.PeerAuthentication{
		{},
		{Mtls: strict},
		{PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{0: strict, 70000: {Mode: 2}, 80: {Mode: 9}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, b, b)
	}
	f.Fuzz(func(t *testing.T, mesh, namespace, workload []byte) {
		var in []PeerAuthentication
		for i, data := range [][]byte{mesh, namespace, workload} {
			spec := &securityv1beta1.PeerAuthentication{}
			if err := proto.Unmarshal(data, spec); err != nil {
				return
			}
			ns := []string{"istio-system", "foo", "foo"}[i]
			if i == 2 && spec.Selector == nil {
				spec.Selector = &typev1beta1.WorkloadSelector{}
			}
			in = append(in, PeerAuthentication{Name: fmt.Sprint("pa", i), Namespace: ns, Spec: spec})
		}
		s := Build("", nil, in)
		for name, a := range s.Resources {
			if err := validate(a); err != nil {
				t.Fatalf("%s: %v\n%v", name, err, a)
			}
		}
		for _, ns := range []string{"foo", "bar", "istio-system"} {
			for _, name := range s.Attached(ns, map[string]string{"app": "x"}) {
				if _, ok := s.Resources[name]; !ok {
					t.Fatalf("a workload in %s lists %s, which is not served", ns, name)
				}
			}
		}
	})
}
