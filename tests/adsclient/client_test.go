package adsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/tests/controlplane"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every expected event.
const wait = 10 * time.Second

// The server is tests/controlplane, a Delta ADS server built on Envoy's
// generated types: istiod's own server lives under istiod/internal, which
// Go does not let this package import, and istiod itself needs a cluster.
// The benchmark exercises the client against istiod.
func startServer(t *testing.T) (*controlplane.Server, *grpc.ClientConn) {
	t.Helper()
	ca, err := controlplane.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controlplane.New(controlplane.Options{Authority: ca, Token: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.RootPool(), ServerName: controlplane.DefaultServerName, MinVersion: tls.VersionTLS12})
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return srv, cc
}

func start(t *testing.T, cc *grpc.ClientConn, opts Options) *Client {
	t.Helper()
	if opts.NodeID == "" {
		opts.NodeID = "ztunnel~10.0.0.1~ztunnel-x.istio-system~istio-system.svc.cluster.local"
	}
	if opts.Types == nil {
		opts.Types = []string{AddressType, AuthorizationType}
	}
	c, err := Start(context.Background(), cc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

func ctxWait(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func workload(name, ip string) *workloadapi.Workload {
	return &workloadapi.Workload{
		Uid:       "Kubernetes//Pod/default/" + name,
		Name:      name,
		Namespace: "default",
		Addresses: [][]byte{net.ParseIP(ip).To4()},
	}
}

func TestSyncAndACK(t *testing.T) {
	srv, cc := startServer(t)
	srv.SetWorkload(workload("a", "10.0.0.2"))
	srv.SetAuthorization(&security.Authorization{Name: "deny", Namespace: "default"})
	before := time.Now()
	c := start(t, cc, Options{})
	ctx := ctxWait(t)
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	// The server counts a stream synced once it has ACKed the newest
	// response of both types.
	if err := srv.WaitAcked(ctx, 1); err != nil {
		t.Fatal(err)
	}
	r, ok := c.Resource(AddressType, "Kubernetes//Pod/default/a")
	if !ok || !r.Held() || r.Updates != 1 || r.Version == "" || r.FirstArrived.Before(before) || r.FirstArrived != r.LastArrived {
		t.Fatalf("workload a: %+v, %v", r, ok)
	}
	if _, ok := c.Resource(AuthorizationType, "default/deny"); !ok {
		t.Errorf("authorization default/deny did not arrive")
	}
	if got := c.Held(AddressType); got != 1 {
		t.Errorf("held addresses %d, want 1", got)
	}
	resps := c.Responses(0)
	if len(resps) != 2 {
		t.Fatalf("%d responses, want 2", len(resps))
	}
	for _, resp := range resps {
		if resp.Size <= 0 || resp.Nonce == "" || resp.NACKed || len(resp.Resources) != 1 {
			t.Errorf("response %+v", resp)
		}
	}
	if err := c.Err(); err != nil {
		t.Errorf("err %v while open", err)
	}
}

func TestUpdatesRemovalsAndSizes(t *testing.T) {
	srv, cc := startServer(t)
	c := start(t, cc, Options{})
	ctx := ctxWait(t)
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	const name = "Kubernetes//Pod/default/a"
	from := c.ResponseCount()

	w := workload("a", "10.0.0.2")
	srv.SetWorkload(w)
	if err := c.Wait(ctx, func() bool { r, _ := c.Resource(AddressType, name); return r.Updates == 1 }); err != nil {
		t.Fatal(err)
	}
	first, _ := c.Resource(AddressType, name)

	w.ServiceAccount = "sleep"
	srv.SetWorkload(w)
	if err := c.Wait(ctx, func() bool { r, _ := c.Resource(AddressType, name); return r.Updates == 2 }); err != nil {
		t.Fatal(err)
	}
	second, _ := c.Resource(AddressType, name)
	if second.FirstArrived != first.FirstArrived || !second.LastArrived.After(first.LastArrived) || second.Version == first.Version {
		t.Errorf("after an update: first %+v, second %+v", first, second)
	}
	got := &workloadapi.Address{}
	if err := second.Body.UnmarshalTo(got); err != nil || got.GetWorkload().GetServiceAccount() != "sleep" {
		t.Errorf("body %v (%v), want the updated workload", got, err)
	}

	srv.RemoveAddress(name)
	if err := c.Wait(ctx, func() bool { return c.Held(AddressType) == 0 }); err != nil {
		t.Fatal(err)
	}
	removed, _ := c.Resource(AddressType, name)
	if removed.Held() || removed.Body != nil || removed.Removed.Before(second.LastArrived) {
		t.Errorf("after removal: %+v", removed)
	}

	// Each response's size is its encoding: the same message built here
	// has the same length.
	resps := c.Responses(from)
	if len(resps) != 3 {
		t.Fatalf("%d responses, want 3: %+v", len(resps), resps)
	}
	for i, want := range [][]string{{name}, {name}, nil} {
		if strings.Join(resps[i].Resources, ",") != strings.Join(want, ",") {
			t.Errorf("response %d carried %v, want %v", i, resps[i].Resources, want)
		}
	}
	if len(resps[2].Removed) != 1 || resps[2].Removed[0] != name {
		t.Errorf("removal response %+v", resps[2])
	}
	body, err := proto.Marshal(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}})
	if err != nil {
		t.Fatal(err)
	}
	if resps[1].Size <= len(body) {
		t.Errorf("update response %d bytes, smaller than its resource (%d bytes)", resps[1].Size, len(body))
	}
	if rest := c.Responses(from + len(resps)); rest != nil {
		t.Errorf("responses past the end: %v", rest)
	}
}

func TestValidateNACKs(t *testing.T) {
	srv, cc := startServer(t)
	c := start(t, cc, Options{
		Types: []string{AddressType},
		Validate: func(_ string, r *xdsapi.Resource) error {
			if strings.HasSuffix(r.GetName(), "/bad") {
				return errors.New("rejected by the test")
			}
			return nil
		},
	})
	ctx := ctxWait(t)
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	srv.SetWorkload(workload("bad", "10.0.0.3"))
	nacks, err := srv.WaitNACKs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(nacks[0].Message, "rejected by the test") {
		t.Errorf("NACK message %q", nacks[0].Message)
	}
	if _, ok := c.Resource(AddressType, "Kubernetes//Pod/default/bad"); ok {
		t.Errorf("a rejected resource was recorded as arrived")
	}
	resps := c.Responses(0)
	if last := resps[len(resps)-1]; !last.NACKed {
		t.Errorf("last response %+v not marked NACKed", last)
	}
}

func TestStreamEnds(t *testing.T) {
	srv, cc := startServer(t)
	c, err := Start(context.Background(), cc, Options{NodeID: "ztunnel~10.0.0.1~x~y", Types: []string{AddressType}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxWait(t)
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := c.Wait(ctx, func() bool { return false }); err == nil || ctx.Err() != nil {
		t.Fatalf("wait after the server stopped: %v", err)
	}
	if c.Err() == nil {
		t.Errorf("no error after the server stopped")
	}
	if err := c.Close(); err == nil {
		t.Errorf("close after a failed stream returned nil")
	}
}

func TestCloseIsClean(t *testing.T) {
	_, cc := startServer(t)
	c, err := Start(context.Background(), cc, Options{Types: []string{AddressType}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSynced(ctxWait(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("err after close %v, want ErrClosed", c.Err())
	}
}

// TestConcurrentReads is for the race detector: readers run while
// responses arrive.
func TestConcurrentReads(t *testing.T) {
	srv, cc := startServer(t)
	c := start(t, cc, Options{})
	ctx := ctxWait(t)
	if err := c.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			next := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				next += len(c.Responses(next))
				_, _ = c.Resource(AddressType, "Kubernetes//Pod/default/w1")
				_ = c.Held(AddressType)
			}
		})
	}
	for i := range n {
		srv.SetWorkload(workload(fmt.Sprintf("w%d", i), "10.0.1.1"))
	}
	err := c.Wait(ctx, func() bool { return c.Held(AddressType) == n })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("held %d of %d: %v", c.Held(AddressType), n, err)
	}
}
