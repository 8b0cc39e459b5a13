//go:build e2e

package framework

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ambient-mesh/mesh/tests/apps/echo/echo"
)

// EchoServer is the YAML of the echo app's Deployment and Service; see [EchoServerYAML].
func (c *Cluster) EchoServer(name, version string, replicas int) string {
	return EchoServerYAML(c.EchoImage, name, version, replicas)
}

// EchoClient is the YAML of a client pod; see [EchoClientYAML].
func (c *Cluster) EchoClient(name, serviceAccount string) string {
	return EchoClientYAML(c.EchoImage, name, serviceAccount)
}

// Send runs the echo client inside pod, through kubectl exec, sending count
// requests to url, and returns its summary. The summary is returned even
// when some requests failed; the error reports only failures to run it.
func (ns *Namespace) Send(t testing.TB, pod, url string, count int, extra ...string) echo.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*5*time.Second+time.Minute)
	defer cancel()
	argv := append([]string{"/usr/local/bin/echo", "client", "--url", url, "--count", strconv.Itoa(count)}, extra...)
	out, err := ns.Exec(ctx, pod, "", argv...)
	var s echo.Summary
	if jerr := json.Unmarshal([]byte(strings.TrimSpace(out)), &s); jerr != nil {
		t.Fatalf("echo client in %s to %s: %v (output %q, decode: %v)", pod, url, err, out, jerr)
	}
	return s
}
