package spiffe_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/spiffe/spiffetest"
)

func TestParse(t *testing.T) {
	good := spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "sleep"}
	for _, tc := range []struct {
		in   string
		want spiffe.Identity
		ok   bool
	}{
		{"spiffe://cluster.local/ns/default/sa/sleep", good, true},
		{"spiffe://cluster.local/ns/default/sa/sleep/", spiffe.Identity{}, false},
		{"spiffe://cluster.local/ns/default/sa/", spiffe.Identity{}, false},
		{"spiffe://cluster.local/ns//sa/sleep", spiffe.Identity{}, false},
		{"spiffe://cluster.local/sa/sleep/ns/default", spiffe.Identity{}, false},
		{"spiffe://Cluster.local/ns/default/sa/sleep", spiffe.Identity{}, false},
		{"spiffe://cluster.local:443/ns/default/sa/sleep", spiffe.Identity{}, false},
		{"spiffe://cluster.local/ns/default/sa/sleep?x=1", spiffe.Identity{}, false},
		{"spiffe://cluster.local/ns/../sa/sleep", spiffe.Identity{}, false},
		{"https://cluster.local/ns/default/sa/sleep", spiffe.Identity{}, false},
		{"spiffe:///ns/default/sa/sleep", spiffe.Identity{}, false},
	} {
		got, err := spiffe.Parse(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, spiffe.ErrInvalid) {
			t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", tc.in, err)
		}
	}
	if got := good.String(); got != "spiffe://cluster.local/ns/default/sa/sleep" {
		t.Errorf("String() = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/default/sa/sleep", "spiffe://a/ns/b/sa/c", "spiffe://", "spiffe://x/ns/y/sa/z/w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := spiffe.Parse(s)
		if err != nil {
			return
		}
		// What parses must print back to the same text, so two readers of
		// one identity can never disagree.
		if id.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, id.String())
		}
		again, err := spiffe.Parse(id.String())
		if err != nil || again != id {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}

func TestVerifyPeer(t *testing.T) {
	ca := spiffetest.NewCA(t)
	other := spiffetest.NewCA(t)
	sleep := spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "sleep"}
	echo := spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "echo"}
	foreign := spiffe.Identity{TrustDomain: "example.org", Namespace: "default", ServiceAccount: "sleep"}

	for _, tc := range []struct {
		name    string
		chain   [][]byte
		allowed []spiffe.Identity
		want    error // nil for success; otherwise a substring check below
		wantErr bool
	}{
		{"any identity in the trust domain", ca.Issue(t, sleep, time.Hour).Certificate, nil, nil, false},
		{"allowed identity", ca.Issue(t, sleep, time.Hour).Certificate, []spiffe.Identity{echo, sleep}, nil, false},
		{"identity not allowed", ca.Issue(t, sleep, time.Hour).Certificate, []spiffe.Identity{echo}, spiffe.ErrNotAllowed, true},
		{"other trust domain", ca.Issue(t, foreign, time.Hour).Certificate, nil, spiffe.ErrNotAllowed, true},
		{"untrusted root", other.Issue(t, sleep, time.Hour).Certificate, nil, nil, true},
		{"expired", ca.Issue(t, sleep, -time.Second).Certificate, nil, nil, true},
		{"no SPIFFE SAN", ca.IssueURIs(t, time.Hour).Certificate, nil, spiffe.ErrInvalid, true},
		{"two SPIFFE SANs", ca.IssueURIs(t, time.Hour, sleep.String(), echo.String()).Certificate, nil, spiffe.ErrInvalid, true},
		{"no certificate", nil, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := spiffe.VerifyPeer(tc.chain, ca.Pool, "cluster.local", tc.allowed...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("VerifyPeer: %v, %v; want error=%v", id, err, tc.wantErr)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !tc.wantErr && id != sleep {
				t.Fatalf("identity %v, want %v", id, sleep)
			}
		})
	}
}
