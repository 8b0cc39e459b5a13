//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/tests/framework"
)

// Kubernetes and Istio names the CA works with; the test spells them out
// rather than importing istiod, which it reaches only through its wire
// protocol and the API server.
const (
	caSecret        = "istio-ca-secret"
	rootConfigMap   = "istio-ca-root-cert"
	rootConfigKey   = "root-cert.pem"
	extraNodeName   = "authentication.kubernetes.io/node-name"
	trustDomain     = "cluster.local"
	impersonatedKey = "ImpersonatedIdentity"
)

// TestCA runs istiod's CA, Kubernetes side included, against the cluster's
// API server: its signing root created in a test namespace's
// istio-ca-secret, callers authenticated by TokenReview of real projected
// tokens, node impersonation checked against real pods on real nodes, and
// the root published to namespaces as ConfigMaps. The CA is istiod's own
// code run as a local process (istiod/internal/ca/cmd/castandalone):
// tests/ cannot import istiod's internal packages, and reaches components
// only through their wire protocols anyway.
func TestCA(t *testing.T) {
	c := framework.Get(t)
	ctx := t.Context()

	ready := c.ReadyNodes(t)
	if len(ready) < 2 {
		t.Fatalf("want 2 ready nodes, got %v", ready)
	}
	nodeA, nodeB := ready[0], ready[1]

	// Namespaces labelled with this run's id are the only ones the CA
	// publishes its root to, so the test leaves the rest of the cluster alone.
	runID := randomHex(4)
	selected := map[string]string{"e2e.mesh/ca-root": runID}
	ns := c.NewNamespace(t, "ca", selected)
	id := func(sa string) string { return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, ns.Name, sa) }

	// Workloads: sleep on node A, remote on node B, the node account's
	// pod on node A, and a service account with no pod at all.
	for _, sa := range []string{"sleep", "remote", "nopod", "ztunnel"} {
		if _, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service account %s: %v", sa, err)
		}
	}
	pods := map[string]*corev1.Pod{}
	for _, p := range []struct{ name, node string }{{"sleep", nodeA}, {"remote", nodeB}, {"ztunnel", nodeA}} {
		pods[p.name] = createSleepPod(t, c, ns, p.name, p.name, p.node)
	}
	for name := range pods {
		pods[name] = waitPodRunning(t, c, ns, name, 2*time.Minute)
	}
	t.Logf("nodes %s and %s; pods %s on %s, %s on %s, %s on %s", nodeA, nodeB,
		pods["sleep"].Name, pods["sleep"].Spec.NodeName, pods["remote"].Name, pods["remote"].Spec.NodeName, pods["ztunnel"].Name, pods["ztunnel"].Spec.NodeName)

	bin := buildCA(t)
	caArgs := []string{"-kubeconfig", c.Kubeconfig, "-namespace", ns.Name, "-node-accounts", ns.Name + "/ztunnel", "-log-level", "debug"}
	primary := startCA(t, "CA", bin, slices.Concat(caArgs, []string{"-namespace-selector", "e2e.mesh/ca-root=" + runID})...)
	if !strings.Contains(primary.logs.String(), `source="new self-signed root in secret istio-ca-secret"`) {
		t.Fatalf("the CA did not create its root in %s/%s:\n%s", ns.Name, caSecret, primary.logs)
	}
	secret, err := c.Client.CoreV1().Secrets(ns.Name).Get(ctx, caSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the CA's root is not stored: %v", err)
	}
	rootPEM := secret.Data["ca-cert.pem"]
	if len(secret.Data["ca-key.pem"]) == 0 || len(rootPEM) == 0 {
		t.Fatalf("%s has keys %v, want ca-cert.pem and ca-key.pem", caSecret, mapKeys(secret.Data))
	}
	// A second CA on the same namespace, as another istiod replica or a
	// restart would be, shares the stored root. It finds the caller's node
	// only from the caller's pod, which the test uses below.
	fallback := startCA(t, "CA finding nodes from pods", bin, slices.Concat(caArgs, []string{"-publish-root=false", "-node-from-token=false"})...)
	if !strings.Contains(fallback.logs.String(), `source="secret istio-ca-secret"`) {
		t.Fatalf("a second CA did not reuse %s/%s:\n%s", ns.Name, caSecret, fallback.logs)
	}

	token := func(t *testing.T, sa string, pod *corev1.Pod, audience string) string {
		t.Helper()
		ttl := int64(600)
		tr, err := c.Client.CoreV1().ServiceAccounts(ns.Name).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				Audiences:         []string{audience},
				ExpirationSeconds: &ttl,
				BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest for %s bound to pod %s: %v", sa, pod.Name, err)
		}
		return tr.Status.Token
	}
	sleepToken := token(t, "sleep", pods["sleep"], "istio-ca")
	ztunnelToken := token(t, "ztunnel", pods["ztunnel"], "istio-ca")

	t.Run("legitimate caller gets its own identity", func(t *testing.T) {
		for _, p := range []*caProcess{primary, fallback} {
			chain, err := p.sign(t, sleepToken, "")
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			leaf := verifyChain(t, chain, rootPEM)
			if got := sans(leaf); len(got) != 1 || got[0] != id("sleep") {
				t.Errorf("%s: leaf SANs %v, want only %s", p.name, got, id("sleep"))
			}
		}
	})

	t.Run("forged tokens refused", func(t *testing.T) {
		for _, tc := range []struct{ name, token string }{
			{"random string", randomHex(32)},
			{"real claims signed by another key", resign(t, sleepToken)},
			{"real token with its payload changed", tamper(sleepToken)},
		} {
			if _, err := primary.sign(t, tc.token, ""); status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s: error %v, want Unauthenticated", tc.name, err)
			}
		}
	})

	t.Run("token for another audience refused", func(t *testing.T) {
		tok := token(t, "sleep", pods["sleep"], "not-istio-ca")
		if _, err := primary.sign(t, tok, ""); status.Code(err) != codes.Unauthenticated {
			t.Errorf("error %v, want Unauthenticated", err)
		}
	})

	t.Run("TokenReview of a pod-bound token names the node", func(t *testing.T) {
		r, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: ztunnelToken, Audiences: []string{"istio-ca"}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenReview: %v", err)
		}
		extra, _ := json.Marshal(r.Status.User.Extra)
		t.Logf("TokenReview of the ztunnel token: user %s, extra %s", r.Status.User.Username, extra)
		node := r.Status.User.Extra[extraNodeName]
		if len(node) == 0 {
			// Then only the pod lookup can tell the node; the fallback CA
			// below proves it works.
			t.Logf("this API server does not set %s; the CA finds the node from the caller's pod", extraNodeName)
			return
		}
		if len(node) != 1 || node[0] != nodeA {
			t.Errorf("%s = %v, want [%s]", extraNodeName, node, nodeA)
		}
	})

	t.Run("node account impersonates only workloads on its node", func(t *testing.T) {
		// primary takes the node from the token when the API server sets it;
		// fallback always from the caller's pod. Both must decide alike.
		for _, p := range []*caProcess{primary, fallback} {
			chain, err := p.sign(t, ztunnelToken, id("sleep"))
			if err != nil {
				t.Fatalf("%s: ztunnel on %s asking for sleep (on %s): %v", p.name, nodeA, nodeA, err)
			}
			if got := sans(verifyChain(t, chain, rootPEM)); len(got) != 1 || got[0] != id("sleep") {
				t.Errorf("%s: impersonated leaf SANs %v, want only %s", p.name, got, id("sleep"))
			}
			for _, sa := range []string{"remote", "nopod"} {
				_, err := p.sign(t, ztunnelToken, id(sa))
				msg := status.Convert(err).Message()
				// The refusal names the node the CA found: node A either way.
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(msg, fmt.Sprintf("node %q", nodeA)) {
					t.Errorf("%s: ztunnel on %s asking for %s: error %v, want PermissionDenied for node %s", p.name, nodeA, sa, err, nodeA)
				}
			}
			if _, err := p.sign(t, sleepToken, id("remote")); status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s: sleep asking for remote: error %v, want PermissionDenied", p.name, err)
			}
		}
	})

	t.Run("root published to namespaces and kept", func(t *testing.T) {
		cms := func(ns string) string {
			cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, rootConfigMap, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return ""
			}
			if err != nil {
				t.Fatal(err)
			}
			return cm.Data[rootConfigKey]
		}
		waitFor(t, "root ConfigMap in "+ns.Name, 30*time.Second, primary, func() bool { return cms(ns.Name) == string(rootPEM) })
		fresh := c.NewNamespace(t, "ca-root", selected)
		waitFor(t, "root ConfigMap in the new namespace "+fresh.Name, 30*time.Second, primary, func() bool { return cms(fresh.Name) == string(rootPEM) })

		cm, err := c.Client.CoreV1().ConfigMaps(fresh.Name).Get(ctx, rootConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[rootConfigKey] = "edited by hand"
		if _, err := c.Client.CoreV1().ConfigMaps(fresh.Name).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "edited root ConfigMap restored", 30*time.Second, primary, func() bool { return cms(fresh.Name) == string(rootPEM) })

		if err := c.Client.CoreV1().ConfigMaps(fresh.Name).Delete(ctx, rootConfigMap, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "deleted root ConfigMap recreated", 30*time.Second, primary, func() bool { return cms(fresh.Name) == string(rootPEM) })

		// A namespace being deleted is left to the namespace controller,
		// which deletes the ConfigMap: the CA must not fight it.
		doomed := "ca-doomed-" + randomHex(3)
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: doomed, Labels: selected}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.Client.CoreV1().Namespaces().Delete(context.Background(), doomed, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete namespace %s: %v", doomed, err)
			}
		})
		waitFor(t, "root ConfigMap in "+doomed, 30*time.Second, primary, func() bool { return cms(doomed) == string(rootPEM) })
		if err := c.Client.CoreV1().Namespaces().Delete(ctx, doomed, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		skipped := fmt.Sprintf(`msg="skipping a namespace being deleted" component=istiod subsystem=root-publisher namespace=%s`, doomed)
		waitFor(t, "deletion of "+doomed+" seen", 30*time.Second, primary, func() bool { return strings.Contains(primary.logs.String(), skipped) })
		waitFor(t, doomed+" gone", 2*time.Minute, primary, func() bool {
			_, err := c.Client.CoreV1().Namespaces().Get(ctx, doomed, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
		for _, line := range strings.Split(primary.logs.String(), "\n") {
			if strings.Contains(line, "namespace="+doomed) && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
				t.Errorf("the CA fought the deletion of %s: %s", doomed, line)
			}
		}
		for _, want := range []string{"created the root certificate ConfigMap", "restored the root certificate ConfigMap"} {
			if !strings.Contains(primary.logs.String(), want) {
				t.Errorf("the CA log lacks %q", want)
			}
		}
	})

	t.Run("deleted pod stops counting", func(t *testing.T) {
		zero := int64(0)
		if err := c.Client.CoreV1().Pods(ns.Name).Delete(ctx, "sleep", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		// The node account may no longer have the identity of a workload
		// that left its node, and a token bound to the deleted pod is void.
		for _, p := range []*caProcess{primary, fallback} {
			waitFor(t, p.name+" refuses sleep's identity to ztunnel", 30*time.Second, p, func() bool {
				_, err := p.sign(t, ztunnelToken, id("sleep"))
				return status.Code(err) == codes.PermissionDenied
			})
		}
		// The API server caches successful token reviews for a few
		// seconds, so the void token still passes for that long.
		waitFor(t, "the deleted pod's token refused", 30*time.Second, primary, func() bool {
			_, err := primary.sign(t, sleepToken, "")
			return status.Code(err) == codes.Unauthenticated
		})
	})
}

// caProcess is a running castandalone.
type caProcess struct {
	name   string
	client pb.IstioCertificateServiceClient
	logs   *framework.SyncBuffer
}

// buildCA builds the standalone CA command.
func buildCA(t *testing.T) string {
	t.Helper()
	return buildCommand(t, "castandalone", "github.com/ambient-mesh/mesh/istiod/internal/ca/cmd/castandalone")
}

// startCA runs the CA until the test ends and connects to it. Its log is
// printed if the test fails.
func startCA(t *testing.T, name, bin string, args ...string) *caProcess {
	t.Helper()
	logs, addr := startListening(t, name, bin, args...)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &caProcess{name: name, client: pb.NewIstioCertificateServiceClient(conn), logs: logs}
}

// buildCommand builds the Go command pkg into the test's temp dir.
func buildCommand(t *testing.T, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// startListening runs bin until the test ends, stopping it with SIGTERM
// (and failing the test if it does not stop cleanly), and returns its log
// and what follows "listening " on the first such line of its standard
// output. The log is printed if the test fails.
func startListening(t *testing.T, name, bin string, args ...string) (*framework.SyncBuffer, string) {
	t.Helper()
	logs := &framework.SyncBuffer{}
	listening := &addrWatcher{found: make(chan string, 1)}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = listening, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("%s exited with %v", name, err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not stop within 15s of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, logs)
		}
	})
	select {
	case addr := <-listening.found:
		return logs, addr
	case err := <-exited:
		exited <- err // for the cleanup
		t.Fatalf("%s exited before serving: %v\n%s", name, err, logs)
	case <-time.After(time.Minute):
		t.Fatalf("%s not serving after 1m:\n%s", name, logs)
	}
	return nil, ""
}

// sign sends a CSR with token, asking for identity impersonate if set, and
// returns the chain.
func (p *caProcess) sign(t *testing.T, token, impersonate string) ([]string, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "e2e"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req := &pb.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		ValidityDuration: 3600,
	}
	if impersonate != "" {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{impersonatedKey: structpb.NewStringValue(impersonate)}}
	}
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token), 30*time.Second)
	defer cancel()
	resp, err := p.client.CreateCertificate(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.CertChain, nil
}

// verifyChain checks that chain is leaf first, root last, the root being
// rootPEM, and that the leaf verifies to it; it returns the leaf.
func verifyChain(t *testing.T, chain []string, rootPEM []byte) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for i, s := range chain {
		block, rest := pem.Decode([]byte(s))
		if block == nil || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("chain[%d] is not one PEM certificate", i)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("chain[%d]: %v", i, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) < 2 {
		t.Fatalf("chain of %d certificates, want leaf and root", len(certs))
	}
	if root := chain[len(chain)-1]; strings.TrimSpace(root) != strings.TrimSpace(string(rootPEM)) {
		t.Fatalf("chain ends with\n%s\nnot the stored root\n%s", root, rootPEM)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(certs[len(certs)-1])
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("leaf does not verify to the root: %v", err)
	}
	return certs[0]
}

// sans lists a certificate's URI and DNS names.
func sans(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return append(out, c.DNSNames...)
}

// createSleepPod creates a pod that sleeps on node as service account sa.
func createSleepPod(t *testing.T, c *framework.Cluster, ns *framework.Namespace, name, sa, node string) *corev1.Pod {
	t.Helper()
	grace := int64(1)
	p, err := c.Client.CoreV1().Pods(ns.Name).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			ServiceAccountName:            sa,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:            "sleep",
				Image:           c.ToolboxImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"/bin/busybox", "sleep", "3600"},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return p
}

func waitPodRunning(t *testing.T, c *framework.Cluster, ns *framework.Namespace, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.Client.CoreV1().Pods(ns.Name).Get(t.Context(), name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return p
		}
		if time.Now().After(deadline) {
			phase := corev1.PodPhase("")
			if p != nil {
				phase = p.Status.Phase
			}
			t.Fatalf("pod %s not running after %s (phase %q, error %v)\n%s", name, timeout, phase, err, ns.Dump())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, failing with the CA's log after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, p *caProcess, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %s; log of %s:\n%s", what, timeout, p.name, p.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(time.Millisecond))
}

// resign returns token with its header and claims intact but signed by a
// key of the same type that the API server never saw.
func resign(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWS: %d parts", len(parts))
	}
	header, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Alg string }
	if err := json.Unmarshal(header, &h); err != nil {
		t.Fatal(err)
	}
	signed := parts[0] + "." + parts[1]
	digest := sha256.Sum256([]byte(signed))
	var sig []byte
	switch h.Alg {
	case "RS256":
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:]); err != nil {
			t.Fatal(err)
		}
	case "ES256":
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	default:
		t.Fatalf("token signed with %q; the test forges RS256 and ES256 only", h.Alg)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func mapKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// addrWatcher is a process's standard output: it reports what follows
// "listening " on the first such line.
type addrWatcher struct {
	mu    sync.Mutex
	buf   []byte
	found chan string
	sent  bool
}

func (w *addrWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for !w.sent {
		line, rest, ok := bytes.Cut(w.buf, []byte("\n"))
		if !ok {
			break
		}
		w.buf = rest
		if addr, ok := strings.CutPrefix(string(line), "listening "); ok {
			w.found <- addr
			w.sent = true
		}
	}
	return len(p), nil
}
