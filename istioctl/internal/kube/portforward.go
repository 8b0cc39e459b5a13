package kube

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// maxBody bounds what is read from an admin endpoint.
const maxBody = 256 << 20

// channelProtocol is the API server's websocket port-forward protocol: each
// binary message starts with a channel byte, 0 for data and 1 for errors,
// and each channel's first two bytes are the port (little endian). One
// websocket carries one TCP connection.
const channelProtocol = "v4.channel.k8s.io"

const (
	dataChannel  = 0
	errorChannel = 1
)

// PodGet returns the body of GET http://127.0.0.1:<port><path> as seen from
// inside pod, through the API server's port-forward. Ports that listen on the
// pod's localhost only (like ztunnel's admin port) are reachable this way.
//
// It speaks the websocket flavour of port-forward itself (rather than
// client-go's tools/portforward) so that istioctl needs no module beyond
// those the project already has.
func PodGet(ctx context.Context, cfg *rest.Config, kc kubernetes.Interface, pod *corev1.Pod, port int, path string) ([]byte, error) {
	name := pod.Namespace + "/" + pod.Name
	if pod.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("pod %s is %s, not Running", name, pod.Status.Phase)
	}
	u := kc.CoreV1().RESTClient().Get().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	q := u.Query()
	q.Set("ports", fmt.Sprint(port))
	u.RawQuery = q.Encode()

	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialPortForward(ctx, cfg, u)
		},
		DisableKeepAlives: true,
	}}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s on pod %s port %d: %w", path, name, port, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("GET %s on pod %s port %d: reading the body: %w", path, name, port, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s on pod %s port %d: %s: %s", path, name, port, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// dialPortForward opens one forwarded TCP connection: a websocket to the
// pod's portforward subresource.
func dialPortForward(ctx context.Context, cfg *rest.Config, u *url.URL) (net.Conn, error) {
	tc, err := cfg.TransportConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes transport config: %w", err)
	}
	header, err := authHeaders(tc, u)
	if err != nil {
		return nil, err
	}
	host := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			host = net.JoinHostPort(u.Hostname(), "443")
		} else {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("port-forward: dial API server %s: %w", host, err)
	}
	conn := raw
	wsURL := *u
	wsURL.Scheme = "ws"
	if u.Scheme == "https" {
		wsURL.Scheme = "wss"
		tlsCfg, err := transport.TLSConfigFor(tc)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("kubernetes TLS config: %w", err)
		}
		if tlsCfg == nil {
			tlsCfg = &tls.Config{}
		}
		tlsCfg = tlsCfg.Clone()
		tlsCfg.NextProtos = []string{"http/1.1"} // websockets need HTTP/1.1
		if tlsCfg.ServerName == "" {
			tlsCfg.ServerName = u.Hostname()
		}
		tlsConn := tls.Client(raw, tlsCfg)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("port-forward: TLS to API server %s: %w", host, err)
		}
		conn = tlsConn
	}
	wsCfg, err := websocket.NewConfig(wsURL.String(), "http://localhost")
	if err != nil {
		conn.Close()
		return nil, err
	}
	wsCfg.Protocol = []string{channelProtocol}
	wsCfg.Header = header
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	rec := &recordingConn{Conn: conn, recording: true}
	ws, err := websocket.NewClient(wsCfg, rec)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to %s: %w", u.Path, handshakeError(rec.buf.Bytes(), err))
	}
	rec.recording = false
	_ = conn.SetDeadline(time.Time{})
	return newChannelConn(ws), nil
}

// recordingConn keeps what is read during the websocket handshake, so that
// a refusal can be explained: x/net/websocket only says "bad status".
type recordingConn struct {
	net.Conn
	recording bool
	buf       bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.recording && c.buf.Len() < 64<<10 {
		c.buf.Write(p[:n])
	}
	return n, err
}

// handshakeError explains a failed handshake from the API server's answer:
// its status and the message of the Status object it sends.
func handshakeError(answer []byte, err error) error {
	resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(answer)), nil)
	if rerr != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	var status struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &status) == nil && status.Message != "" {
		msg = status.Message
	}
	if msg == "" {
		return fmt.Errorf("the API server answered %s", resp.Status)
	}
	return fmt.Errorf("the API server answered %s: %s", resp.Status, msg)
}

// authHeaders returns the headers client-go's transport would add for
// authentication (bearer tokens, exec and auth provider plugins through
// WrapTransport, basic auth, impersonation, user agent).
func authHeaders(tc *transport.Config, u *url.URL) (http.Header, error) {
	capture := &headerCapture{}
	rt, err := transport.HTTPWrappersForConfig(tc, capture)
	if err != nil {
		return nil, fmt.Errorf("kubernetes auth: %w", err)
	}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if _, err := rt.RoundTrip(req); err != nil && !errors.Is(err, errCaptured) {
		return nil, fmt.Errorf("kubernetes auth: %w", err)
	}
	h := capture.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	return h, nil
}

var errCaptured = errors.New("headers captured")

type headerCapture struct{ header http.Header }

func (c *headerCapture) RoundTrip(r *http.Request) (*http.Response, error) {
	c.header = r.Header
	return nil, errCaptured
}

// channelConn is a net.Conn over one port-forward websocket.
type channelConn struct {
	ws       *websocket.Conn
	pr       *io.PipeReader
	wmu      sync.Mutex
	closeOne sync.Once
}

func newChannelConn(ws *websocket.Conn) *channelConn {
	pr, pw := io.Pipe()
	c := &channelConn{ws: ws, pr: pr}
	go c.readLoop(pw)
	return c
}

func (c *channelConn) readLoop(pw *io.PipeWriter) {
	// The first two bytes on each channel are the port number.
	skip := map[byte]int{dataChannel: 2, errorChannel: 2}
	var errText strings.Builder
	for {
		var msg []byte
		if err := websocket.Message.Receive(c.ws, &msg); err != nil {
			if errText.Len() > 0 {
				pw.CloseWithError(fmt.Errorf("port-forward: %s", errText.String()))
			} else if errors.Is(err, io.EOF) {
				pw.Close()
			} else {
				pw.CloseWithError(fmt.Errorf("port-forward: %w", err))
			}
			return
		}
		if len(msg) == 0 {
			continue
		}
		ch, data := msg[0], msg[1:]
		if n := min(skip[ch], len(data)); n > 0 {
			skip[ch] -= n
			data = data[n:]
		}
		switch ch {
		case dataChannel:
			if len(data) > 0 {
				if _, err := pw.Write(data); err != nil {
					return // reader closed
				}
			}
		case errorChannel:
			errText.Write(data)
		}
	}
}

func (c *channelConn) Read(p []byte) (int, error) { return c.pr.Read(p) }

func (c *channelConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	frame := make([]byte, 0, len(p)+1)
	frame = append(frame, dataChannel)
	frame = append(frame, p...)
	if err := websocket.Message.Send(c.ws, frame); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *channelConn) Close() error {
	var err error
	c.closeOne.Do(func() {
		err = c.ws.Close()
		c.pr.Close()
	})
	return err
}

func (c *channelConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *channelConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *channelConn) SetDeadline(t time.Time) error      { return c.ws.SetDeadline(t) }
func (c *channelConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *channelConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
