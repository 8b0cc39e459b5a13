package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// writePKI issues every certificate the control plane and the nodes use,
// and a kubeconfig for each client identity.
func (c *Config) writePKI() (*CA, error) {
	dir := c.pkiDir()
	ca, err := loadOrCreateCA(dir, "ca")
	if err != nil {
		return nil, err
	}
	// Aggregated API servers trust requests proxied by the API server
	// through a CA of their own, as in any production cluster.
	frontProxy, err := loadOrCreateCA(dir, "front-proxy-ca")
	if err != nil {
		return nil, err
	}
	if err := frontProxy.issue(dir, "front-proxy-client", certSpec{commonName: "front-proxy-client", client: true}); err != nil {
		return nil, err
	}
	if err := ensureServiceAccountKey(dir); err != nil {
		return nil, err
	}
	local := []net.IP{net.ParseIP("127.0.0.1")}
	certs := map[string]certSpec{
		// etcd dials itself (its gRPC gateway) with its serving certificate.
		"etcd-server":           {commonName: "etcd", ips: local, dnsNames: []string{"localhost"}, server: true, client: true},
		"apiserver-etcd-client": {commonName: "kube-apiserver-etcd-client", client: true},
		"apiserver": {
			commonName: "kube-apiserver",
			ips:        []net.IP{net.ParseIP(HostIP), net.ParseIP(APIServiceIP), net.ParseIP("127.0.0.1")},
			dnsNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc." + ClusterDomain},
			server: true,
		},
		// The API server's identity towards kubelets (exec, logs, port-forward).
		"apiserver-kubelet-client":   {commonName: "kube-apiserver-kubelet-client", organization: []string{"system:masters"}, client: true},
		"admin":                      {commonName: "cluster-admin", organization: []string{"system:masters"}, client: true},
		"controller-manager":         {commonName: "system:kube-controller-manager", client: true},
		"scheduler":                  {commonName: "system:kube-scheduler", client: true},
		"controller-manager-serving": {commonName: "kube-controller-manager", ips: local, dnsNames: []string{"localhost"}, server: true},
		"scheduler-serving":          {commonName: "kube-scheduler", ips: local, dnsNames: []string{"localhost"}, server: true},
		"kube-proxy":                 {commonName: "system:kube-proxy", client: true},
	}
	for _, n := range c.NodeList() {
		certs[n.Name+"-kubelet-client"] = certSpec{commonName: "system:node:" + n.Name, organization: []string{"system:nodes"}, client: true}
		certs[n.Name+"-kubelet-serving"] = certSpec{commonName: "system:node:" + n.Name, ips: []net.IP{net.ParseIP(n.IP)}, dnsNames: []string{n.Name}, server: true}
	}
	for name, spec := range certs {
		if err := ca.issue(dir, name, spec); err != nil {
			return nil, err
		}
	}
	server := fmt.Sprintf("https://%s:%d", HostIP, APIPort)
	kubeconfigs := map[string]string{
		c.AdminKubeconfig(): "admin",
		filepath.Join(c.StateDir, "controller-manager.kubeconfig"): "controller-manager",
		filepath.Join(c.StateDir, "scheduler.kubeconfig"):          "scheduler",
		filepath.Join(c.StateDir, "kube-proxy.kubeconfig"):         "kube-proxy",
	}
	for _, n := range c.NodeList() {
		kubeconfigs[filepath.Join(c.nodeDir(n), "kubelet.kubeconfig")] = n.Name + "-kubelet-client"
	}
	for path, cert := range kubeconfigs {
		if err := writeKubeconfig(path, server, filepath.Join(dir, "ca.crt"), filepath.Join(dir, cert+".crt"), filepath.Join(dir, cert+".key")); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

// writeKubeconfig writes a kubeconfig that embeds its credentials, so it can
// be copied elsewhere and still work.
func writeKubeconfig(path, server, caFile, certFile, keyFile string) error {
	var data [3][]byte
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		data[i] = b
	}
	b64 := base64.StdEncoding.EncodeToString
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: local
  context: {cluster: local, user: user}
current-context: local
`, server, b64(data[0]), b64(data[1]), b64(data[2]))
	return writeFile(path, []byte(text), 0o600)
}

func (c *Config) pki(name string) string { return filepath.Join(c.pkiDir(), name) }

func (c *Config) etcd() *daemon {
	return c.daemon("etcd", "etcd",
		"--name=local",
		"--data-dir="+filepath.Join(c.StateDir, "etcd"),
		"--listen-client-urls="+etcdClientURL,
		"--advertise-client-urls="+etcdClientURL,
		"--listen-peer-urls="+etcdPeerURL,
		"--initial-advertise-peer-urls="+etcdPeerURL,
		"--initial-cluster=local="+etcdPeerURL,
		"--cert-file="+c.pki("etcd-server.crt"),
		"--key-file="+c.pki("etcd-server.key"),
		"--trusted-ca-file="+c.pki("ca.crt"),
		"--client-cert-auth=true",
		"--listen-metrics-urls=http://127.0.0.1:12381",
		"--quota-backend-bytes=4294967296",
		"--snapshot-count=10000",
	)
}

func (c *Config) apiserver() *daemon {
	return c.daemon("kube-apiserver", c.bin("kube-apiserver"),
		"--advertise-address="+HostIP,
		"--bind-address="+HostIP,
		fmt.Sprintf("--secure-port=%d", APIPort),
		"--etcd-servers="+etcdClientURL,
		"--etcd-cafile="+c.pki("ca.crt"),
		"--etcd-certfile="+c.pki("apiserver-etcd-client.crt"),
		"--etcd-keyfile="+c.pki("apiserver-etcd-client.key"),
		"--tls-cert-file="+c.pki("apiserver.crt"),
		"--tls-private-key-file="+c.pki("apiserver.key"),
		"--client-ca-file="+c.pki("ca.crt"),
		"--kubelet-client-certificate="+c.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+c.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+c.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc."+ClusterDomain,
		"--service-account-key-file="+c.pki("sa.pub"),
		"--service-account-signing-key-file="+c.pki("sa.key"),
		"--requestheader-client-ca-file="+c.pki("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+c.pki("front-proxy-client.crt"),
		"--proxy-client-key-file="+c.pki("front-proxy-client.key"),
		"--profiling=false",
		"--v=1",
	)
}

// hostComponent is a control-plane component that talks to the API server
// with its own kubeconfig (name.kubeconfig), delegates authentication and
// authorization of its own endpoints to it, and serves on localhost with a
// certificate from the cluster CA (name-serving).
func (c *Config) hostComponent(binary, name string, flags ...string) *daemon {
	kubeconfig := filepath.Join(c.StateDir, name+".kubeconfig")
	argv := []string{
		c.bin(binary),
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--tls-cert-file=" + c.pki(name+"-serving.crt"),
		"--tls-private-key-file=" + c.pki(name+"-serving.key"),
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	}
	return c.daemon(binary, append(argv, flags...)...)
}

func (c *Config) controllerManager() *daemon {
	return c.hostComponent("kube-controller-manager", "controller-manager",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.pki("sa.key"),
		"--root-ca-file="+c.pki("ca.crt"),
		"--cluster-signing-cert-file="+c.pki("ca.crt"),
		"--cluster-signing-key-file="+c.pki("ca.key"),
		"--allocate-node-cidrs=true",
		"--cluster-cidr="+ClusterCIDR,
		"--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+ServiceCIDR,
	)
}

func (c *Config) scheduler() *daemon {
	return c.hostComponent("kube-scheduler", "scheduler")
}

// httpsCheck returns a check that GETs url with the admin client
// certificate and expects 200.
func (c *Config) httpsCheck(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		client, err := c.tlsClient("admin")
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// tlsClient is an HTTPS client that trusts the cluster CA and presents the
// named client certificate.
func (c *Config) tlsClient(cert string) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(c.pki(cert+".crt"), c.pki(cert+".key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{pair},
			RootCAs:      pool,
		}},
	}, nil
}

// etcdCheck asks etcd's health endpoint over its client TLS.
func (c *Config) etcdCheck(ctx context.Context) error {
	client, err := c.tlsClient("apiserver-etcd-client")
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, etcdClientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"true"`) {
		return fmt.Errorf("etcd health: %s %s", resp.Status, body)
	}
	return nil
}
