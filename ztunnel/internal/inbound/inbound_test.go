package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/ambient-mesh/mesh/pkg/hbone"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
	"github.com/ambient-mesh/mesh/pkg/spiffe/spiffetest"
	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/ztunnel/internal/state"
)

var (
	echoID  = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "echo"}
	sleepID = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "sleep"}
	curlID  = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "other", ServiceAccount: "curl"}
)

// env is a pod's 15008 in miniature: TLS with the pod's certificate, HBONE,
// the handler, and an echo app behind it.
type env struct {
	ca    *spiffetest.CA
	addr  string
	store *state.Store
	dials atomic.Int32 // connections the handler made to the app
	// reports has what the handler reported of each stream.
	reports chan Report
}

// newEnv starts the pod's 15008; known says whether xDS has described the
// pod's workload.
func newEnv(t *testing.T, appUp, known bool) *env {
	t.Helper()
	ca := spiffetest.NewCA(t)
	podCert := ca.Issue(t, echoID, time.Hour)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	if !appUp {
		app.Close()
	}
	st := state.New()
	e := &env{ca: ca, store: st, reports: make(chan Report, 16)}
	h := &Handler{
		PodIPs:       []netip.Addr{netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("10.245.0.5"), netip.MustParseAddr("10.245.0.9")},
		PodName:      "echo-0",
		PodNamespace: "default",
		Store:        st,
		// The app's real address stands in for the pod's, as a dial from
		// the pod's netns would reach it.
		DialApp: func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
			e.dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", app.Addr().String())
		},
		Done: func(r Report) { e.reports <- r },
	}
	if known {
		w := &workloadapi.Workload{Uid: "pod-echo", Name: "echo-0", Namespace: "default", ServiceAccount: "echo",
			Addresses: [][]byte{netip.MustParseAddr("10.244.0.5").AsSlice(), netip.MustParseAddr("10.245.0.5").AsSlice()}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE}
		// xDS gives one of the addresses the pod holds to another workload.
		o := &workloadapi.Workload{Uid: "pod-other", Name: "other-0", Namespace: "default", ServiceAccount: "other",
			Addresses: [][]byte{netip.MustParseAddr("10.245.0.9").AsSlice()}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE}
		var rs []state.Resource
		for _, x := range []*workloadapi.Workload{w, o} {
			body, _ := anypb.New(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: x}})
			rs = append(rs, state.Resource{Name: x.Uid, Version: "1", Body: body})
		}
		if err := st.Apply(state.AddressType, rs, nil); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ServerTLS(func() (*tls.Certificate, error) { return &podCert, nil }, func() *x509.CertPool { return ca.Pool }, "cluster.local")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := nc.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					tc.Close()
					return
				}
				peer, err := PeerIdentity(tc.ConnectionState())
				if err != nil {
					tc.Close()
					return
				}
				src := tc.RemoteAddr().(*net.TCPAddr).AddrPort()
				_ = hbone.Serve(context.Background(), tc, func(s *hbone.Stream) { h.Serve(context.Background(), s, peer, src) })
			}()
		}
	}()
	e.addr = ln.Addr().String()
	return e
}

// open dials as id and opens a tunnel to authority.
func (e *env) open(t *testing.T, id spiffe.Identity, ca *spiffetest.CA, authority string) (*hbone.Stream, error) {
	t.Helper()
	cert := ca.Issue(t, id, time.Hour)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := spiffe.VerifyPeer(raw, e.ca.Pool, "cluster.local", echoID)
			return err
		}}
	nc, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		return nil, err
	}
	cc, err := hbone.NewClientConn(context.Background(), nc)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { cc.Close() })
	return cc.Open(context.Background(), authority, nil)
}

func TestTunnelReachesTheApp(t *testing.T) {
	for _, authority := range []string{"10.244.0.5:8080", "10.245.0.5:8080"} {
		t.Run(authority, func(t *testing.T) { tunnelReachesTheApp(t, authority) })
	}
}

// tunnelReachesTheApp: a tunnel to any of the pod's addresses is served.
func tunnelReachesTheApp(t *testing.T, authority string) {
	e := newEnv(t, true, true)
	s, err := e.open(t, sleepID, e.ca, authority)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hello" {
		t.Fatalf("echo %q, %v", got, err)
	}
	select {
	case r := <-e.reports:
		if r.Status != 200 || r.ToApp != 5 || r.FromApp != 5 || r.Peer != sleepID || r.Workload.GetName() != "echo-0" {
			t.Fatalf("report %+v; want 200 and 5 bytes each way from %s to echo-0", r, sleepID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report of the tunnel")
	}
}

func TestRefusals(t *testing.T) {
	allowSleepOnly := &security.Authorization{Name: "allow-sleep", Namespace: "default", Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{
			Principals: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "cluster.local/ns/default/sa/sleep"}}},
		}}}}}}}
	for _, tc := range []struct {
		name      string
		appUp     bool
		policy    *security.Authorization
		id        spiffe.Identity
		foreignCA bool
		unknown   bool // xDS has not described the pod yet
		authority string
		want      string
	}{
		{name: "authority of another pod", appUp: true, id: sleepID, authority: "10.244.0.6:8080", want: "400"},
		{name: "authority the pod holds but xDS gives another workload", appUp: true, id: sleepID, authority: "10.245.0.9:8080", want: "400"},
		{name: "authority that is not ip:port", appUp: true, id: sleepID, authority: "echo:8080", want: "400"},
		{name: "policy allows another identity", appUp: true, policy: allowSleepOnly, id: curlID, authority: "10.244.0.5:8080", want: "401"},
		{name: "app not listening", appUp: false, id: sleepID, authority: "10.244.0.5:8080", want: "503"},
		// Its policies are unknown too: fail closed.
		{name: "pod unknown to xDS", appUp: true, unknown: true, id: sleepID, authority: "10.244.0.5:8080", want: "503"},
		// The TLS alert or the closed socket may reach the client first.
		{name: "client certificate from another root", appUp: true, id: sleepID, foreignCA: true, authority: "10.244.0.5:8080", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.appUp, !tc.unknown)
			if tc.policy != nil {
				body, _ := anypb.New(tc.policy)
				if err := e.store.Apply(state.AuthorizationType, []state.Resource{{Name: "default/" + tc.policy.Name, Version: "1", Body: body}}, nil); err != nil {
					t.Fatal(err)
				}
			}
			ca := e.ca
			if tc.foreignCA {
				ca = spiffetest.NewCA(t)
			}
			s, err := e.open(t, tc.id, ca, tc.authority)
			if err == nil {
				s.Close()
				t.Fatalf("tunnel opened; want it refused (%s)", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want %s", err, tc.want)
			}
			if tc.want != "" {
				select {
				case r := <-e.reports:
					if fmt.Sprint(r.Status) != tc.want || r.Peer != tc.id {
						t.Fatalf("report %+v; want status %s for %s", r, tc.want, tc.id)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no report of the refused stream")
				}
			}
			if (tc.want != "503" || tc.unknown) && e.dials.Load() != 0 {
				t.Fatalf("the app was dialled for a refused tunnel")
			}
		})
	}
	t.Run("the allowed identity passes the same policy", func(t *testing.T) {
		e := newEnv(t, true, true)
		body, _ := anypb.New(allowSleepOnly)
		if err := e.store.Apply(state.AuthorizationType, []state.Resource{{Name: "default/allow-sleep", Version: "1", Body: body}}, nil); err != nil {
			t.Fatal(err)
		}
		s, err := e.open(t, sleepID, e.ca, "10.244.0.5:8080")
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	})
}
