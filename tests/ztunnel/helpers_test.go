package ztunnel_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/ambient-mesh/mesh/pkg/workloadapi/security"
	"github.com/ambient-mesh/mesh/tests/meshlab"
)

// addr is pod's address with port, as a dial target.
func addr(m *meshlab.Mesh, pod string, port int) string {
	return net.JoinHostPort(m.IP(pod).String(), strconv.Itoa(port))
}

// principal is the pod's identity as policies name it: without spiffe://.
func principal(m *meshlab.Mesh, pod string) string {
	return strings.TrimPrefix(m.Identity(pod), "spiffe://")
}

// waitFor polls cond until it returns nil, failing the test with its last
// error when timeout has passed.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustExchange runs exchange and fails the test if it fails; it returns the
// app's greeting.
func mustExchange(t *testing.T, m *meshlab.Mesh, pod, target, payload string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	greeting, err := exchange(ctx, m, pod, target, payload)
	if err != nil {
		t.Fatalf("%s -> %s: %v", pod, target, err)
	}
	return greeting
}

// refusal tries pod -> target and returns nil if the connection was
// refused: closed or reset (or not accepted at all) without the app's
// greeting. A connection left hanging is not a refusal: the deadline would
// hide a proxy that neither carries nor refuses.
func refusal(m *meshlab.Mesh, pod, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	greeting, err := exchange(ctx, m, pod, target, "are you there?\n")
	switch {
	case err == nil:
		return fmt.Errorf("%s -> %s was carried to the app (greeting %q)", pod, target, greeting)
	case greeting != "":
		return fmt.Errorf("%s -> %s reached the app (greeting %q) and then failed: %v", pod, target, greeting, err)
	case isTimeout(err):
		return fmt.Errorf("%s -> %s hung instead of being refused: %v", pod, target, err)
	}
	return nil
}

func expectRefused(t *testing.T, m *meshlab.Mesh, pod, target string) {
	t.Helper()
	if err := refusal(m, pod, target); err != nil {
		t.Fatal(err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// echoConn is a long-lived connection to an app: greeting read, then lines
// echoed one at a time.
type echoConn struct {
	c        net.Conn
	r        *bufio.Reader
	greeting string
	n        int
}

func openEcho(t *testing.T, m *meshlab.Mesh, pod, target string) *echoConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := meshlab.Dial(ctx, m.Topo.Pod(pod).NS, target)
	if err != nil {
		t.Fatalf("%s -> %s: %v", pod, target, err)
	}
	t.Cleanup(func() { c.Close() })
	e := &echoConn{c: c, r: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if e.greeting, err = e.r.ReadString('\n'); err != nil {
		t.Fatalf("%s -> %s: read greeting: %v", pod, target, err)
	}
	if err := e.ping(); err != nil {
		t.Fatalf("%s -> %s: %v", pod, target, err)
	}
	return e
}

// ping sends one line and waits for it to come back.
func (e *echoConn) ping() error {
	e.n++
	line := fmt.Sprintf("ping %d %s\n", e.n, strings.Repeat("x", 100))
	_ = e.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := e.c.Write([]byte(line)); err != nil {
		return fmt.Errorf("ping %d: write: %w", e.n, err)
	}
	got, err := e.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("ping %d: read: %w", e.n, err)
	}
	if got != line {
		return fmt.Errorf("ping %d: echoed %q", e.n, got)
	}
	return nil
}

func (e *echoConn) mustPing(t *testing.T, what string) {
	t.Helper()
	if err := e.ping(); err != nil {
		t.Fatalf("%s: long-lived connection: %v", what, err)
	}
}

// push sends policies through the control plane and waits until both
// ztunnels have ACKed them.
func push(t *testing.T, m *meshlab.Mesh, policies ...*security.Authorization) {
	t.Helper()
	for _, p := range policies {
		m.CP.SetAuthorization(p)
	}
	waitAcked(t, m, 15*time.Second)
}

func waitAcked(t *testing.T, m *meshlab.Mesh, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := m.CP.WaitAcked(ctx, 2); err != nil {
		t.Fatalf("config did not reach both ztunnels: %v (NACKs: %v)", err, m.CP.NACKs())
	}
}

func exactMatch(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}

func presenceMatch() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}

// policy is an Authorization in namespace default of one group whose rules
// must all hold (each rule one match: Istio's "from" and "to").
func policy(name string, scope security.Scope, action security.Action, rules ...*security.Match) *security.Authorization {
	g := &security.Group{}
	for _, r := range rules {
		g.Rules = append(g.Rules, &security.Rules{Matches: []*security.Match{r}})
	}
	return &security.Authorization{Name: name, Namespace: "default", Scope: scope, Action: action, Groups: []*security.Group{g}}
}

// dump is the part of ztunnel's config dump the tests read.
type dump struct {
	Workloads    map[string]json.RawMessage `json:"workloads"`
	Services     map[string]json.RawMessage `json:"services"`
	Policies     map[string]json.RawMessage `json:"policies"`
	Certificates []struct {
		Identity  string    `json:"identity"`
		Serial    string    `json:"serial"`
		NotBefore time.Time `json:"not_before"`
		NotAfter  time.Time `json:"not_after"`
		Chain     []string  `json:"chain"`
	} `json:"certificates"`
	Pods []struct {
		UID       string   `json:"uid"`
		Name      string   `json:"name"`
		Namespace string   `json:"namespace"`
		Identity  string   `json:"identity"`
		IPs       []string `json:"ips"`
	} `json:"pods"`
	Connections []dumpConn `json:"connections"`
}

type dumpConn struct {
	Pod         string `json:"pod"`
	Direction   string `json:"direction"`
	Src         string `json:"src"`
	Dst         string `json:"dst"`
	SrcIdentity string `json:"src_identity"`
	DstIdentity string `json:"dst_identity"`
	Via         string `json:"via"`
}

// configDump fetches and decodes node n's config dump; raw is the JSON.
func configDump(t *testing.T, m *meshlab.Mesh, n int) (d dump, raw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := m.ConfigDump(ctx, n)
	if err != nil {
		t.Fatalf("node%d config dump: %v", n, err)
	}
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("node%d config dump: %v\n%s", n, err, raw)
	}
	return d, raw
}

func (d dump) podNames() []string {
	var names []string
	for _, p := range d.Pods {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

func (d dump) serial(identity string) string {
	for _, c := range d.Certificates {
		if c.Identity == identity {
			return c.Serial
		}
	}
	return ""
}

// metric sums the samples of the named metric on node n whose labels
// include all of want.
func metric(t *testing.T, m *meshlab.Mesh, n int, name string, want map[string]string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := m.Metrics(ctx, n)
	if err != nil {
		t.Fatalf("node%d metrics: %v", n, err)
	}
	return sumSamples(text, name, want)
}

func sumSamples(text, name string, want map[string]string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		end := strings.LastIndex(rest, "} ")
		if end < 0 {
			continue
		}
		labels := parseLabels(rest[:end])
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+2:]), 64); err == nil {
			sum += v
		}
	}
	return sum
}

// parseLabels reads k="v",k="v" (values here never hold quotes or commas).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

// logLines returns node n's log lines holding every one of substrs.
func logLines(m *meshlab.Mesh, n int, substrs ...string) []string {
	var out []string
	for line := range strings.SplitSeq(m.Log(n), "\n") {
		all := true
		for _, s := range substrs {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// waitLog waits for a line of node n's log holding every one of substrs.
func waitLog(t *testing.T, m *meshlab.Mesh, n int, substrs ...string) string {
	t.Helper()
	var line string
	waitFor(t, 5*time.Second, fmt.Sprintf("node%d log line with %q", n, substrs), func() error {
		if l := logLines(m, n, substrs...); len(l) > 0 {
			line = l[len(l)-1]
			return nil
		}
		return errors.New("none yet")
	})
	return line
}

// ready reports node n's readiness answer.
func ready(m *meshlab.Mesh, n int) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	code, body, err := meshlab.HTTPGet(ctx, m.Nodes[n-1].NS, "http://127.0.0.1:15021/healthz/ready")
	return code, strings.TrimSpace(string(body)), err
}

func expectReady(t *testing.T, m *meshlab.Mesh, n int) {
	t.Helper()
	if code, body, err := ready(m, n); err != nil || code != http.StatusOK {
		t.Fatalf("node%d readiness: %d %q %v", n, code, body, err)
	}
}
