//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	pb "istio.io/api/security/v1alpha1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ambient-mesh/mesh/pkg/workloadapi"
	"github.com/ambient-mesh/mesh/pkg/xdsapi"
	"github.com/ambient-mesh/mesh/pkg/xdsapi/xdsgrpc"
	"github.com/ambient-mesh/mesh/tests/adsclient"
	"github.com/ambient-mesh/mesh/tests/framework"
)

const addressType = "type.googleapis.com/istio.workload.Address"

// TestIstiod runs the istiod binary as a local process against the cluster
// and checks, through a real Delta ADS client on its plaintext and TLS
// ports, that the cluster's pods and Services arrive as workload discovery
// resources, as deltas, and that its CA answers over TLS.
func TestIstiod(t *testing.T) {
	c := framework.Get(t)
	ctx := t.Context()

	ready := c.ReadyNodes(t)
	if len(ready) == 0 {
		t.Fatal("no ready node")
	}
	node := ready[0]

	runID := randomHex(4)
	selected := map[string]string{"e2e.mesh/istiod": runID}
	system := c.NewNamespace(t, "istiod", selected)
	ambient := c.NewNamespace(t, "istiod-amb", map[string]string{"e2e.mesh/istiod": runID, "istio.io/dataplane-mode": "ambient"})
	plain := c.NewNamespace(t, "istiod-plain", selected)

	p := startIstiod(t, buildIstiod(t), "-kubeconfig", c.Kubeconfig, "-namespace", system.Name,
		"-root-namespace-selector", "e2e.mesh/istiod="+runID, "-node-accounts", system.Name+"/ztunnel",
		"-grpc-addr", "127.0.0.1:0", "-secure-grpc-addr", "127.0.0.1:0", "-ready-addr", "127.0.0.1:0", "-monitoring-addr", "127.0.0.1:0", "-log-level", "debug")
	p.waitReady(t, time.Minute)

	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), largeMessages)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	plainADS := openADS(t, p, "plaintext", cc)
	plainADS.waitSynced(t, 30*time.Second)
	t.Logf("initial state over plaintext: %d addresses", len(plainADS.snapshot()))

	for _, ns := range []*framework.Namespace{ambient, plain} {
		if _, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sleep"}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service account: %v", err)
		}
	}
	created := time.Now()
	createSleepPod(t, c, ambient, "amb", "sleep", node)
	createSleepPod(t, c, plain, "plain", "sleep", node)
	ambPod := waitPodRunning(t, c, ambient, "amb", 2*time.Minute)
	plainPod := waitPodRunning(t, c, plain, "plain", 2*time.Minute)
	ambUID := "Kubernetes//Pod/" + ambient.Name + "/amb"
	plainUID := "Kubernetes//Pod/" + plain.Name + "/plain"

	t.Run("pods arrive as workloads", func(t *testing.T) {
		check := func(uid string, pod *corev1.Pod, want workloadapi.TunnelProtocol) func(map[string]*workloadapi.Address) bool {
			return func(s map[string]*workloadapi.Address) bool {
				w := s[uid].GetWorkload()
				return w != nil && len(w.GetAddresses()) == 1 && net.IP(w.GetAddresses()[0]).String() == pod.Status.PodIP &&
					w.GetNode() == pod.Spec.NodeName && w.GetServiceAccount() == "sleep" && w.GetTunnelProtocol() == want
			}
		}
		plainADS.waitFor(t, "ambient pod as an HBONE workload", 30*time.Second, check(ambUID, ambPod, workloadapi.TunnelProtocol_HBONE))
		plainADS.waitFor(t, "plain pod as a NONE workload", 30*time.Second, check(plainUID, plainPod, workloadapi.TunnelProtocol_NONE))
		arrived := plainADS.firstSeen(ambUID)
		t.Logf("latency: pod create request sent -> workload at the client: %s (includes scheduling and sandbox start until the pod has an IP)", arrived.Sub(created).Round(time.Millisecond))
	})

	t.Run("service and its workload entry", func(t *testing.T) {
		svc, err := c.Client.CoreV1().Services(ambient.Name).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "sleep"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "amb"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		host := "sleep." + ambient.Name + ".svc.cluster.local"
		plainADS.waitFor(t, "service with its ClusterIP", 30*time.Second, func(s map[string]*workloadapi.Address) bool {
			sv := s[ambient.Name+"/"+host].GetService()
			for _, a := range sv.GetAddresses() {
				if net.IP(a.GetAddress()).String() == svc.Spec.ClusterIP {
					return true
				}
			}
			return false
		})
		plainADS.waitFor(t, "workload's services entry", 30*time.Second, func(s map[string]*workloadapi.Address) bool {
			ports := s[ambUID].GetWorkload().GetServices()[ambient.Name+"/"+host].GetPorts()
			return len(ports) == 1 && ports[0].GetServicePort() == 80 && ports[0].GetTargetPort() == 8080
		})
	})

	t.Run("only deltas", func(t *testing.T) {
		mark := plainADS.mark()
		start := time.Now()
		patch := []byte(`{"metadata":{"labels":{"version":"v2"}}}`)
		if _, err := c.Client.CoreV1().Pods(ambient.Name).Patch(ctx, "amb", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		updated := time.Now()
		resp := plainADS.waitResponse(t, "response carrying the relabelled pod", 30*time.Second, mark, func(r *xdsapi.DeltaDiscoveryResponse) bool {
			return slices.ContainsFunc(r.GetResources(), func(res *xdsapi.Resource) bool { return res.GetName() == ambUID })
		})
		arrived := plainADS.firstSeenAfter(ambUID, mark)
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
		}
		if len(names) != 1 || len(resp.GetRemovedResources()) != 0 {
			t.Errorf("response to one pod change carries %v, removed %v; want only %s", names, resp.GetRemovedResources(), ambUID)
		}
		if rev := plainADS.snapshot()[ambUID].GetWorkload().GetCanonicalRevision(); rev != "v2" {
			t.Errorf("canonical revision %q, want v2", rev)
		}
		// The push often arrives before the patch's own reply does.
		t.Logf("latency: pod patch sent -> updated resource at the client: %s (the API server's reply to the patch took %s)",
			arrived.Sub(start).Round(time.Millisecond), updated.Sub(start).Round(time.Millisecond))
	})

	t.Run("metrics and debug endpoints on the monitoring port", func(t *testing.T) {
		hc := &http.Client{Timeout: 10 * time.Second}
		get := func(path string) string {
			t.Helper()
			resp, err := hc.Get("http://" + p.monitorAddr + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
			}
			return string(body)
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(get("/metrics")))
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		sum := func(name string) float64 {
			var v float64
			for _, m := range families[name].GetMetric() {
				v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
			return v
		}
		if got := sum("pilot_xds"); got < 1 {
			t.Errorf("pilot_xds = %v with a client connected", got)
		}
		if got := sum("pilot_xds_pushes"); got < 3 {
			t.Errorf("pilot_xds_pushes = %v after the pushes above", got)
		}
		if _, ok := families["pilot_proxy_convergence_time"]; !ok {
			t.Error("no pilot_proxy_convergence_time")
		}
		const node = "e2e~127.0.0.1~e2e.default~default.svc.cluster.local"
		if conns := get("/debug/connections"); !strings.Contains(conns, node) {
			t.Errorf("/debug/connections does not list the client %s:\n%s", node, conns)
		}
		if dump := get("/debug/config_dump?proxyID=" + node); !strings.Contains(dump, ambUID) {
			t.Errorf("/debug/config_dump for the client does not show the workload %s it was sent:\n%s", ambUID, dump)
		}
	})

	t.Run("TLS port: ADS and CA", func(t *testing.T) {
		cm, err := c.Client.CoreV1().ConfigMaps(system.Name).Get(ctx, rootConfigMap, metav1.GetOptions{})
		for deadline := time.Now().Add(30 * time.Second); err != nil && time.Now().Before(deadline); {
			time.Sleep(200 * time.Millisecond)
			cm, err = c.Client.CoreV1().ConfigMaps(system.Name).Get(ctx, rootConfigMap, metav1.GetOptions{})
		}
		if err != nil {
			t.Fatalf("root ConfigMap not published in %s: %v", system.Name, err)
		}
		rootPEM := []byte(cm.Data[rootConfigKey])
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(rootPEM) {
			t.Fatalf("no certificate in %s/%s", system.Name, rootConfigMap)
		}
		creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "istiod." + system.Name + ".svc", MinVersion: tls.VersionTLS12})
		sc, err := grpc.NewClient(p.secureAddr, grpc.WithTransportCredentials(creds), largeMessages)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		tlsADS := openADS(t, p, "TLS", sc)
		tlsADS.waitSynced(t, 30*time.Second)
		if w := tlsADS.snapshot()[ambUID].GetWorkload(); w.GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE {
			t.Errorf("over TLS, the ambient pod is %v", w)
		}

		// A wrong server name must fail verification.
		bad := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "istiod.elsewhere.svc", MinVersion: tls.VersionTLS12})
		if bc, err := grpc.NewClient(p.secureAddr, grpc.WithTransportCredentials(bad)); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := xdsgrpc.OpenDelta(cctx, bc)
			if err == nil {
				_, err = pb.NewIstioCertificateServiceClient(bc).CreateCertificate(cctx, &pb.IstioCertificateRequest{})
			}
			cancel()
			bc.Close()
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("wrong server name: error %v, want a certificate error", err)
			}
		}

		ttl := int64(600)
		tr, err := c.Client.CoreV1().ServiceAccounts(ambient.Name).CreateToken(ctx, "sleep", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				Audiences:         []string{"istio-ca"},
				ExpirationSeconds: &ttl,
				BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: ambPod.Name, UID: ambPod.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		caClient := &caProcess{name: "istiod", client: pb.NewIstioCertificateServiceClient(sc), logs: p.logs}
		chain, err := caClient.sign(t, tr.Status.Token, "")
		if err != nil {
			t.Fatalf("CreateCertificate over TLS: %v", err)
		}
		want := fmt.Sprintf("spiffe://%s/ns/%s/sa/sleep", trustDomain, ambient.Name)
		if got := sans(verifyChain(t, chain, rootPEM)); len(got) != 1 || got[0] != want {
			t.Errorf("leaf SANs %v, want only %s", got, want)
		}
	})

	t.Run("deleted pod removed", func(t *testing.T) {
		mark := plainADS.mark()
		zero := int64(0)
		if err := c.Client.CoreV1().Pods(plain.Name).Delete(ctx, "plain", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		plainADS.waitResponse(t, "removal of the deleted pod", time.Minute, mark, func(r *xdsapi.DeltaDiscoveryResponse) bool {
			return slices.Contains(r.GetRemovedResources(), plainUID)
		})
		if _, ok := plainADS.snapshot()[plainUID]; ok {
			t.Error("the deleted pod is still held")
		}
	})
}

// largeMessages lets a client take istiod's first response whole: in a
// cluster shared with other suites it can exceed gRPC's 4 MiB default.
var largeMessages = grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(adsclient.DefaultMaxRecvMsgSize))

// istiodProcess is a running istiod binary.
type istiodProcess struct {
	grpcAddr, secureAddr, readyAddr, monitorAddr string
	logs                                         *framework.SyncBuffer
}

func buildIstiod(t *testing.T) string {
	t.Helper()
	return buildCommand(t, "istiod", "github.com/ambient-mesh/mesh/istiod/cmd/istiod")
}

// startIstiod runs istiod until the test ends; its log is printed if the
// test fails.
func startIstiod(t *testing.T, bin string, args ...string) *istiodProcess {
	t.Helper()
	logs, addrs := startListening(t, "istiod", bin, args...)
	f := strings.Fields(addrs)
	if len(f) != 4 {
		t.Fatalf("istiod printed %q, want four addresses", addrs)
	}
	return &istiodProcess{grpcAddr: f[0], secureAddr: f[1], readyAddr: f[2], monitorAddr: f[3], logs: logs}
}

func (p *istiodProcess) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := hc.Get("http://" + p.readyAddr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Logf("istiod ready after %s", time.Since(start).Round(time.Millisecond))
				return
			}
		}
		if time.Since(start) > timeout {
			t.Fatalf("istiod not ready after %s (last: %v):\n%s", timeout, err, p.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// adsClient is one Delta ADS stream subscribed wildcard to addresses. It
// ACKs every response and keeps the resources it holds.
type adsClient struct {
	name string
	p    *istiodProcess

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every response
	state     map[string]*workloadapi.Address
	responses []*xdsapi.DeltaDiscoveryResponse
	arrivals  []map[string]time.Time // per response: names and arrival time
	err       error
}

func openADS(t *testing.T, p *istiodProcess, name string, cc grpc.ClientConnInterface) *adsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := xdsgrpc.OpenDelta(ctx, cc)
	if err != nil {
		cancel()
		t.Fatalf("%s: open delta ADS: %v", name, err)
	}
	a := &adsClient{name: name, p: p, changed: make(chan struct{}), state: map[string]*workloadapi.Address{}}
	node := &xdsapi.Node{Id: "e2e~127.0.0.1~e2e.default~default.svc.cluster.local"}
	if err := stream.Send(&xdsapi.DeltaDiscoveryRequest{Node: node, TypeUrl: addressType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		cancel()
		t.Fatalf("%s: subscribe: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			now := time.Now()
			a.mu.Lock()
			if err != nil {
				a.err = err
				close(a.changed)
				a.mu.Unlock()
				return
			}
			seen := map[string]time.Time{}
			var nack error
			for _, r := range resp.GetResources() {
				addr := &workloadapi.Address{}
				if err := r.GetResource().UnmarshalTo(addr); err != nil {
					nack = fmt.Errorf("%s: %w", r.GetName(), err)
					continue
				}
				a.state[r.GetName()] = addr
				seen[r.GetName()] = now
			}
			for _, n := range resp.GetRemovedResources() {
				delete(a.state, n)
			}
			a.responses = append(a.responses, resp)
			a.arrivals = append(a.arrivals, seen)
			close(a.changed)
			a.changed = make(chan struct{})
			a.mu.Unlock()
			req := &xdsapi.DeltaDiscoveryRequest{TypeUrl: addressType, ResponseNonce: resp.GetNonce()}
			if nack != nil {
				req.ErrorDetail = &xdsapi.Status{Code: 3, Message: nack.Error()}
			}
			if err := stream.Send(req); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a
}

// wait blocks until cond, called under the lock after every response,
// holds, failing the test after timeout.
func (a *adsClient) wait(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		ok, err, ch := cond(), a.err, a.changed
		a.mu.Unlock()
		if ok {
			t.Logf("%s: %s after %s", a.name, what, time.Since(start).Round(time.Millisecond))
			return
		}
		if err != nil {
			t.Fatalf("%s: %s: stream ended: %v\nlog of istiod:\n%s", a.name, what, err, a.p.logs)
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("%s: %s: not after %s; log of istiod:\n%s", a.name, what, timeout, a.p.logs)
		}
	}
}

func (a *adsClient) waitSynced(t *testing.T, timeout time.Duration) {
	t.Helper()
	a.wait(t, "first response", timeout, func() bool { return len(a.responses) > 0 })
}

func (a *adsClient) waitFor(t *testing.T, what string, timeout time.Duration, cond func(map[string]*workloadapi.Address) bool) {
	t.Helper()
	a.wait(t, what, timeout, func() bool { return cond(a.state) })
}

// mark returns the number of responses so far, for waitResponse.
func (a *adsClient) mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.responses)
}

// waitResponse waits for a response after mark that satisfies match and
// returns it.
func (a *adsClient) waitResponse(t *testing.T, what string, timeout time.Duration, mark int, match func(*xdsapi.DeltaDiscoveryResponse) bool) *xdsapi.DeltaDiscoveryResponse {
	t.Helper()
	var found *xdsapi.DeltaDiscoveryResponse
	a.wait(t, what, timeout, func() bool {
		for _, r := range a.responses[mark:] {
			if match(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

func (a *adsClient) snapshot() map[string]*workloadapi.Address {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]*workloadapi.Address, len(a.state))
	for k, v := range a.state {
		out[k] = v
	}
	return out
}

// firstSeen is when name first arrived.
func (a *adsClient) firstSeen(name string) time.Time { return a.firstSeenAfter(name, 0) }

// firstSeenAfter is when name first arrived in a response after mark.
func (a *adsClient) firstSeenAfter(name string, mark int) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, seen := range a.arrivals[mark:] {
		if at, ok := seen[name]; ok {
			return at
		}
	}
	return time.Time{}
}
