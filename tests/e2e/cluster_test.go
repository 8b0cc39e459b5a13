//go:build e2e

// Package e2e holds the end-to-end tests that run on a real cluster.
package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ambient-mesh/mesh/tests/framework"
)

func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }

// TestClusterBasics proves the cluster every other suite stands on: nodes
// with their own addresses, pods reaching each other across nodes with
// their own source addresses, Services through kube-proxy, cluster DNS, the
// exec and logs paths through the kubelet, and ServiceAccount tokens that
// the mesh's CA will rely on.
func TestClusterBasics(t *testing.T) {
	c := framework.Get(t)
	ctx := context.Background()

	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) < 2 {
		t.Fatalf("want at least 2 nodes, got %d", len(nodes.Items))
	}
	nodeIPs := map[string]string{}
	for _, n := range nodes.Items {
		if !framework.NodeReady(n) {
			t.Errorf("node %s is not Ready", n.Name)
		}
		ip := framework.NodeInternalIP(n)
		if ip == "" {
			t.Errorf("node %s has no InternalIP", n.Name)
		}
		if other, dup := ipOwner(nodeIPs, ip); dup {
			t.Errorf("nodes %s and %s share address %s", n.Name, other, ip)
		}
		nodeIPs[n.Name] = ip
	}

	ns := c.NewNamespace(t, "cluster", nil)
	ns.Apply(t, c.EchoServer("echo", "v1", 2))
	ns.Apply(t, c.EchoClient("client", "client"))
	ns.WaitRollout(t, "deployment/echo", 3*time.Minute)
	ns.WaitRollout(t, "deployment/client", 3*time.Minute)

	servers := ns.Pods(t, "app=echo")
	clients := ns.Pods(t, "app=client")
	if len(servers) != 2 || len(clients) != 1 {
		t.Fatalf("want 2 echo pods and 1 client pod, got %d and %d", len(servers), len(clients))
	}
	if servers[0].Spec.NodeName == servers[1].Spec.NodeName {
		t.Fatalf("both echo replicas are on %s; want them spread over two nodes", servers[0].Spec.NodeName)
	}
	client := clients[0]
	t.Logf("client %s (%s) on %s; echo %s (%s) on %s, %s (%s) on %s", client.Name, client.Status.PodIP, client.Spec.NodeName,
		servers[0].Name, servers[0].Status.PodIP, servers[0].Spec.NodeName, servers[1].Name, servers[1].Status.PodIP, servers[1].Spec.NodeName)

	t.Run("pod IP, same and other node", func(t *testing.T) {
		crossed := false
		for _, s := range servers {
			if s.Spec.NodeName != client.Spec.NodeName {
				crossed = true
			}
			sum := ns.Send(t, client.Name, fmt.Sprintf("http://%s/", net.JoinHostPort(s.Status.PodIP, "8080")), 3)
			if sum.OK != 3 || sum.ByPod[s.Name] != 3 {
				t.Errorf("to %s (%s, node %s): %d/3 ok, by pod %v, errors %v", s.Name, s.Status.PodIP, s.Spec.NodeName, sum.OK, sum.ByPod, sum.ErrorSamples)
				continue
			}
			// No SNAT between pods: the server sees the client pod's own address.
			if host := hostOf(sum.First.ClientAddr); host != client.Status.PodIP {
				t.Errorf("%s saw the client as %s, want the client pod's IP %s", s.Name, host, client.Status.PodIP)
			}
		}
		if !crossed {
			t.Errorf("no echo replica on another node than the client's %s", client.Spec.NodeName)
		}
	})

	var svc *corev1.Service
	if svc, err = c.Client.CoreV1().Services(ns.Name).Get(ctx, "echo", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// kube-proxy programs a Service a moment after its endpoints are ready;
	// until then its address refuses connections. Wait for both, with
	// deadlines, before asserting that every request succeeds.
	ns.WaitEndpoints(t, "echo", 2, time.Minute)
	reachable := time.Now().Add(30 * time.Second)
	for ns.Send(t, client.Name, "http://"+svc.Spec.ClusterIP+"/", 1).OK != 1 {
		if time.Now().After(reachable) {
			t.Fatalf("service %s (%s) not reachable after 30s\n%s", svc.Name, svc.Spec.ClusterIP, ns.Dump())
		}
		time.Sleep(250 * time.Millisecond)
	}
	fqdn := "echo." + ns.Name + ".svc.cluster.local"
	for _, tc := range []struct {
		name, url string
		count     int
	}{
		{"ClusterIP over HTTP", "http://" + svc.Spec.ClusterIP + "/", 20},
		{"DNS name over HTTP", "http://" + fqdn + "/", 20},
		{"short DNS name over h2c", "h2c://echo/", 5},
		{"DNS name over gRPC", "grpc://" + fqdn + ":7070", 5},
		{"DNS name over TCP", "tcp://" + fqdn + ":9090", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// kube-proxy programs a new endpoint a moment after the pod is
			// Ready, so balancing is awaited, with a deadline; every request
			// must succeed all along.
			seen := map[string]int{}
			deadline := time.Now().Add(30 * time.Second)
			for {
				sum := ns.Send(t, client.Name, tc.url, tc.count)
				if sum.OK != tc.count {
					t.Fatalf("%s: %d/%d ok, errors %v", tc.url, sum.OK, tc.count, sum.ErrorSamples)
				}
				for pod, n := range sum.ByPod {
					seen[pod] += n
				}
				// New connections are balanced over both replicas; with 20
				// requests, missing one has a chance of about 2 in a million.
				if tc.count < 20 || len(seen) == 2 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: replies came only from %v for 30s, want both replicas", tc.url, seen)
				}
				time.Sleep(time.Second)
			}
		})
	}

	t.Run("kubectl logs", func(t *testing.T) {
		// Every replica served the client above; its log names the client.
		for _, s := range servers {
			logs, err := ns.Logs(ctx, s.Name, "")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs, client.Status.PodIP) {
				t.Errorf("log of %s does not mention the client %s:\n%s", s.Name, client.Status.PodIP, logs)
			}
		}
	})

	t.Run("TokenRequest and TokenReview", func(t *testing.T) {
		// A token bound to the client pod, for the mesh CA's audience: what
		// a projected token volume holds.
		ttl := int64(600)
		tr, err := c.Client.CoreV1().ServiceAccounts(ns.Name).CreateToken(ctx, "client", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				Audiences:         []string{"istio-ca"},
				ExpirationSeconds: &ttl,
				BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: client.Name, UID: client.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest: %v", err)
		}
		token := tr.Status.Token
		review := func(token string, audiences ...string) authenticationv1.TokenReviewStatus {
			r, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("TokenReview: %v", err)
			}
			return r.Status
		}
		st := review(token, "istio-ca")
		wantUser := "system:serviceaccount:" + ns.Name + ":client"
		if !st.Authenticated || st.User.Username != wantUser {
			t.Fatalf("review of a good token: authenticated=%v user=%q error=%q; want %q", st.Authenticated, st.User.Username, st.Error, wantUser)
		}
		if got := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != client.Name {
			t.Errorf("review names pod %v, want %s", got, client.Name)
		}
		if got := st.User.Extra["authentication.kubernetes.io/pod-uid"]; len(got) != 1 || got[0] != string(client.UID) {
			t.Errorf("review names pod uid %v, want %s", got, client.UID)
		}
		if st := review(token, "some-other-audience"); st.Authenticated {
			t.Errorf("a token for istio-ca was accepted for another audience")
		}
		if st := review(tamper(token), "istio-ca"); st.Authenticated {
			t.Errorf("a tampered token was accepted")
		}
	})
}

func ipOwner(ips map[string]string, ip string) (string, bool) {
	for name, other := range ips {
		if other == ip {
			return name, true
		}
	}
	return "", false
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// tamper changes one character of the token's payload, keeping its form.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) < 10 {
		return token + "x"
	}
	p := []byte(parts[1])
	if p[5] == 'A' {
		p[5] = 'B'
	} else {
		p[5] = 'A'
	}
	parts[1] = string(p)
	return strings.Join(parts, ".")
}
