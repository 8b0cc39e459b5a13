package ztunnel_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/meshlab"
	"github.com/ambient-mesh/mesh/tests/netlab"
)

var meshSeq atomic.Int32

// The standard pods: client and server enrolled on different nodes, and
// outsider, a pod outside the mesh on the server's node.
var standardPods = []meshlab.PodSpec{
	{Name: "client", Node: 1, Mesh: true},
	{Name: "server", Node: 2, Mesh: true},
	{Name: "outsider", Node: 2},
}

// newMesh starts a mesh for one test and tears it down after, printing the
// ztunnels' logs and config dumps if the test failed.
func newMesh(t *testing.T, pods []meshlab.PodSpec, args ...string) *meshlab.Mesh {
	t.Helper()
	return newMeshWith(t, meshlab.Options{Pods: pods, Args: args})
}

// newMeshWith is newMesh with more options; the prefix, directory and
// binary are filled in.
func newMeshWith(t *testing.T, opts meshlab.Options) *meshlab.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts.Prefix = fmt.Sprintf("%s%d", netlab.PidPrefix("zt"), meshSeq.Add(1))
	opts.Dir = t.TempDir()
	opts.Ztunnel = ztunnelBin
	m, err := meshlab.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start mesh: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			t.Log(m.Diagnose(dctx))
			cancel()
		}
		if err := m.Close(); err != nil {
			t.Errorf("tear down mesh: %v", err)
		}
		// A ztunnel that panicked, or raced (built with GOFLAGS=-race),
		// fails the test even if the traffic looked right.
		for n := 1; n <= 2; n++ {
			for _, bad := range []string{"panic:", "WARNING: DATA RACE"} {
				if log := m.Log(n); strings.Contains(log, bad) {
					t.Errorf("ztunnel on node%d: %q in its log:\n%s", n, bad, log)
				}
			}
		}
	})
	return m
}

// app is a server in a pod: it answers each connection with the peer
// address it sees, then echoes.
type app struct {
	ln    net.Listener
	conns atomic.Int32
}

func startApp(t *testing.T, m *meshlab.Mesh, pod string, port int) *app {
	t.Helper()
	ln, err := meshlab.Listen(m.Topo.Pod(pod).NS, fmt.Sprintf("%s:%d", m.IP(pod), port))
	if err != nil {
		t.Fatal(err)
	}
	a := &app{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "from %s\n", c.RemoteAddr())
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return a
}

// exchange connects from pod to addr, reads the app's greeting, echoes
// payload through, and returns the greeting.
func exchange(ctx context.Context, m *meshlab.Mesh, pod, addr, payload string) (string, error) {
	c, err := meshlab.Dial(ctx, m.Topo.Pod(pod).NS, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	greeting, err := readLine(c)
	if err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	if _, err := io.WriteString(c, payload); err != nil {
		return greeting, err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return greeting, err
	}
	if string(got) != payload {
		return greeting, fmt.Errorf("echoed %d bytes, want %d", len(got), len(payload))
	}
	return greeting, nil
}

func readLine(c net.Conn) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			return b.String(), err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
}

func TestBytesFlowBothWaysAcrossNodes(t *testing.T) {
	m := newMesh(t, standardPods)
	startApp(t, m, "server", 8080)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	payload := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	greeting, err := exchange(ctx, m, "client", fmt.Sprintf("%s:8080", m.IP("server")), payload)
	if err != nil {
		t.Fatal(err)
	}
	// The app sees the connection come from its own pod (ztunnel dials it
	// from inside the pod's namespace), not from the client directly.
	if !strings.HasPrefix(greeting, "from "+m.IP("server").String()+":") {
		t.Fatalf("app saw %q; want a connection from ztunnel in its own pod", greeting)
	}
}
