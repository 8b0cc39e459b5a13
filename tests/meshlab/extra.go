package meshlab

import (
	"context"
	"io"
	"net"
	"net/http"

	"github.com/ambient-mesh/mesh/tests/netlab"
)

// ControlPlaneSocket is the unix socket the control plane serves on and
// the ztunnels dial; pass it to CP.Start after a CP.Stop.
func (m *Mesh) ControlPlaneSocket() string { return m.path("istiod.sock") }

// HTTPPost posts an empty body to a URL from inside a namespace (a node's
// ztunnel admin port, to change its log level for example).
func HTTPPost(ctx context.Context, ns netlab.Netns, url string) (int, []byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return Dial(ctx, ns, addr) },
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
