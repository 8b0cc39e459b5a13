package echo

// Identity names the workload that answers; in Kubernetes it comes from the
// downward API.
type Identity struct {
	Pod       string
	Namespace string
	Version   string
}

// Protocol names reported in [Reply.Protocol].
const (
	ProtocolHTTP1 = "HTTP/1.1"
	ProtocolHTTP2 = "HTTP/2.0"
	ProtocolGRPC  = "gRPC"
	ProtocolTCP   = "TCP"
)

// Reply is what the server reports about one request or connection. HTTP
// answers it as the JSON body, gRPC as a google.protobuf.Struct with the same
// field names, and TCP as the greeting line (pod, namespace, version and
// clientAddr only).
type Reply struct {
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	Version   string `json:"version"`
	Protocol  string `json:"protocol"`
	Method    string `json:"method,omitempty"`
	Host      string `json:"host,omitempty"`
	Path      string `json:"path,omitempty"`
	// ClientAddr is the peer address as the server saw it, ip:port.
	ClientAddr string              `json:"clientAddr"`
	Headers    map[string][]string `json:"headers"`
	// Message is the payload echoed back by gRPC and TCP.
	Message string `json:"message,omitempty"`
	// LocalAddr is filled in by the client, never the server: its own end of
	// the connection, so a test can compare it with ClientAddr to see whether
	// the source address survived the path.
	LocalAddr string `json:"localAddr,omitempty"`
}
