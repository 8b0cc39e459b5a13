package agentapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeAgent struct {
	mu      sync.Mutex
	added   []PodAdded
	deleted []PodDeleted
	addErr  error
	status  error
}

func (a *fakeAgent) PodAdded(_ context.Context, req PodAdded) (AddResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.added = append(a.added, req)
	if a.addErr != nil {
		return AddResult{}, a.addErr
	}
	return AddResult{Enrolled: req.PodNamespace == "mesh"}, nil
}

func (a *fakeAgent) PodDeleted(_ context.Context, req PodDeleted) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deleted = append(a.deleted, req)
	return nil
}

func (a *fakeAgent) Status(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// serve runs Handler(a) on a unix socket in a short temp dir (socket paths
// are limited to about 100 bytes).
func serve(t *testing.T, a Agent) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agentapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := SocketPath(filepath.Join(dir, "run"))
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(a)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return sock
}

func TestRoundTrip(t *testing.T) {
	agent := &fakeAgent{}
	c := NewClient(serve(t, agent))
	ctx := context.Background()

	one := 0
	req := PodAdded{Netns: "/var/run/netns/x", PodName: "p", PodNamespace: "mesh", PodUID: "u",
		ContainerID: "c", IfName: "eth0", IPs: []IPConfig{{Address: "10.0.0.7/24", Gateway: "10.0.0.1", Interface: &one}}}
	res, err := c.PodAdded(ctx, req)
	if err != nil || !res.Enrolled {
		t.Fatalf("PodAdded = %+v, %v", res, err)
	}
	agent.mu.Lock()
	got := agent.added[0]
	agent.mu.Unlock()
	if got.Netns != req.Netns || got.PodUID != "u" || len(got.IPs) != 1 || *got.IPs[0].Interface != 0 {
		t.Errorf("agent got %+v", got)
	}
	if err := c.PodDeleted(ctx, PodDeleted{PodName: "p", PodNamespace: "mesh"}); err != nil || agent.deletes() != 1 {
		t.Errorf("PodDeleted: %v, %d deletes", err, len(agent.deleted))
	}
	if err := c.Status(ctx); err != nil {
		t.Errorf("Status: %v", err)
	}

	agent.mu.Lock()
	agent.addErr = errors.New("ztunnel did not ack")
	agent.status = errors.New("ztunnel not connected")
	agent.mu.Unlock()
	if _, err := c.PodAdded(ctx, req); err == nil || !strings.Contains(err.Error(), "ztunnel did not ack") || errors.Is(err, ErrUnreachable) {
		t.Errorf("agent error came back as %v", err)
	}
	if err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "ztunnel not connected") {
		t.Errorf("Status = %v", err)
	}
	if _, err := c.PodAdded(ctx, PodAdded{PodName: "p"}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("invalid request answered %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	c := NewClient(sock)
	_, err := c.PodAdded(context.Background(), PodAdded{PodName: "p", PodNamespace: "ns", Netns: "/x"})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), sock) {
		t.Errorf("err %v, want ErrUnreachable naming %s", err, sock)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"ok", `{"Netns": "/n", "PodName": "p", "PodNamespace": "ns"}`, ""},
		{"unknown fields ignored", `{"Netns": "/n", "PodName": "p", "PodNamespace": "ns", "New": 1}`, ""},
		{"no netns", `{"PodName": "p", "PodNamespace": "ns"}`, "netns is required"},
		{"no pod", `{"Netns": "/n"}`, "pod name and namespace"},
		{"trailing", `{"Netns": "/n", "PodName": "p", "PodNamespace": "ns"} {}`, "trailing data"},
		{"too large", `{"Netns": "` + strings.Repeat("a", MaxBodyBytes) + `"}`, "decode request"},
		{"not json", `nope`, "decode request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodePodAdded(strings.NewReader(tt.in))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzDecode: request bodies come from whatever reaches the socket.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"Netns": "/n", "PodName": "p", "PodNamespace": "ns", "IPs": [{"address": "10.0.0.1/24", "interface": 0}]}`))
	f.Add([]byte(`{"PodName": "p", "PodNamespace": "ns", "PodUID": "u"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if req, err := DecodePodAdded(bytes.NewReader(data)); err == nil {
			if req.Validate() != nil {
				t.Fatalf("accepted an invalid add: %+v", req)
			}
		}
		if req, err := DecodePodDeleted(bytes.NewReader(data)); err == nil {
			if req.Validate() != nil {
				t.Fatalf("accepted an invalid delete: %+v", req)
			}
		}
	})
}

func (a *fakeAgent) deletes() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.deleted)
}

type slowAgent struct{ fakeAgent }

func (a *slowAgent) PodAdded(ctx context.Context, _ PodAdded) (AddResult, error) {
	<-ctx.Done()
	return AddResult{}, ctx.Err()
}

func TestDeadline(t *testing.T) {
	c := NewClient(serve(t, &slowAgent{}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.PodAdded(ctx, PodAdded{PodName: "p", PodNamespace: "ns", Netns: "/x"})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "in time") {
		t.Errorf("err %v, want a deadline error that is not ErrUnreachable", err)
	}
}
