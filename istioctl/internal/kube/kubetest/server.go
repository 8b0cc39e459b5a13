// Package kubetest serves just enough of the Kubernetes API for istioctl's
// tests: listing pods, and the websocket port-forward to them, answered by
// in-process HTTP handlers standing in for the pods' ports.
package kubetest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/net/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
)

// Token is the bearer token the server requires.
const Token = "kubetest-token"

// Server is a fake API server.
type Server struct {
	*httptest.Server
	Pods []corev1.Pod
	// Ports answers forwarded requests, keyed "namespace/pod:port".
	Ports map[string]http.Handler
	// ForwardError, when set, is sent on the port-forward error channel
	// instead of forwarding.
	ForwardError string
}

// NewServer starts a server; it is closed when the test ends.
func NewServer(t testing.TB, pods []corev1.Pod, ports map[string]http.Handler) *Server {
	t.Helper()
	s := &Server{Pods: pods, Ports: ports}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Config is a client configuration for the server.
func (s *Server) Config() *rest.Config {
	return &rest.Config{
		Host:        s.URL,
		BearerToken: Token,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}),
		},
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+Token {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`))
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// api/v1/namespaces/{ns}/pods[/{name}/portforward]
	if len(parts) < 5 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "namespaces" || parts[4] != "pods" {
		http.NotFound(w, r)
		return
	}
	ns := parts[3]
	switch {
	case len(parts) == 5 && r.Method == http.MethodGet:
		s.listPods(w, r, ns)
	case len(parts) == 7 && parts[6] == "portforward":
		s.portForward(w, r, ns, parts[5])
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) listPods(w http.ResponseWriter, r *http.Request, ns string) {
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	list := corev1.PodList{Items: []corev1.Pod{}}
	list.APIVersion, list.Kind = "v1", "PodList"
	for _, p := range s.Pods {
		if p.Namespace == ns && sel.Matches(labels.Set(p.Labels)) {
			list.Items = append(list.Items, p)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(list)
}

const channelProtocol = "v4.channel.k8s.io"

func (s *Server) portForward(w http.ResponseWriter, r *http.Request, ns, pod string) {
	port := r.URL.Query().Get("ports")
	h := s.Ports[fmt.Sprintf("%s/%s:%s", ns, pod, port)]
	ws := websocket.Server{
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			cfg.Protocol = []string{channelProtocol}
			return nil
		},
		Handler: func(c *websocket.Conn) {
			defer c.Close()
			var p uint16
			_, _ = fmt.Sscan(port, &p)
			pb := binary.LittleEndian.AppendUint16(nil, p)
			_ = websocket.Message.Send(c, append([]byte{0}, pb...))
			_ = websocket.Message.Send(c, append([]byte{1}, pb...))
			if s.ForwardError != "" || h == nil {
				msg := s.ForwardError
				if msg == "" {
					msg = fmt.Sprintf("error forwarding port %s to pod %s: connection refused", port, pod)
				}
				_ = websocket.Message.Send(c, append([]byte{1}, msg...))
				return
			}
			var req bytes.Buffer
			for !strings.Contains(req.String(), "\r\n\r\n") {
				var msg []byte
				if err := websocket.Message.Receive(c, &msg); err != nil {
					return
				}
				if len(msg) > 0 && msg[0] == 0 {
					req.Write(msg[1:])
				}
			}
			hr, err := http.ReadRequest(bufio.NewReader(&req))
			if err != nil {
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, hr)
			resp := rec.Result()
			resp.Close = true
			var raw bytes.Buffer
			_ = resp.Write(&raw)
			// Split over frames, as a real stream may be.
			b := raw.Bytes()
			half := len(b) / 2
			_ = websocket.Message.Send(c, append([]byte{0}, b[:half]...))
			_ = websocket.Message.Send(c, append([]byte{0}, b[half:]...))
		},
	}
	ws.ServeHTTP(w, r)
}
