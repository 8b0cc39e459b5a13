package ca

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const istiodNS = "istio-system"

func secret(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: istiodNS}, Data: data}
}

// pluggedIn is a cacerts secret: an intermediate under a user's root.
func pluggedIn(t *testing.T) (*corev1.Secret, *testCert) {
	t.Helper()
	root := newTestCA(t, "user root", nil, true, 24*time.Hour)
	inter := newTestCA(t, "user intermediate", root, true, 24*time.Hour)
	return secret(CACertsSecret, map[string][]byte{
		CertFile:  inter.certPEM(),
		KeyFile:   inter.keyPEM(t),
		ChainFile: append(inter.certPEM(), root.certPEM()...),
		RootFile:  root.certPEM(),
	}), root
}

func selfSignedSecret(t *testing.T) (*corev1.Secret, *Authority) {
	t.Helper()
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	return secret(SelfSignedSecret, a.Marshal()), a
}

// creates counts the secret creations the client was asked for.
func creates(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.Matches("create", "secrets") {
			n++
		}
	}
	return n
}

func TestLoadOrCreate(t *testing.T) {
	cacerts, userRoot := pluggedIn(t)
	stored, storedCA := selfSignedSecret(t)

	t.Run("cacerts wins over istio-ca-secret", func(t *testing.T) {
		client := fake.NewClientset(cacerts, stored)
		a, source, err := LoadOrCreate(t.Context(), client, istiodNS, nil)
		if err != nil {
			t.Fatal(err)
		}
		if source != SourceCACerts {
			t.Errorf("source %q, want %q", source, SourceCACerts)
		}
		if !bytes.Equal(a.RootPEM(), userRoot.certPEM()) {
			t.Error("root is not the one in cacerts")
		}
		chain, err := a.Sign(csrPEM(t, newP256(t)), sleepID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if certs := parseChain(t, chain, userRoot.certPEM()); len(certs) != 3 {
			t.Errorf("chain of %d certificates, want leaf, intermediate, root", len(certs))
		}
		if n := creates(client); n != 0 {
			t.Errorf("%d secrets created, want none", n)
		}
	})

	t.Run("istio-ca-secret reused", func(t *testing.T) {
		client := fake.NewClientset(stored)
		a, source, err := LoadOrCreate(t.Context(), client, istiodNS, nil)
		if err != nil {
			t.Fatal(err)
		}
		if source != SourceSelfSigned || !bytes.Equal(a.RootPEM(), storedCA.RootPEM()) {
			t.Errorf("source %q, same root %v; want %q and the stored root", source, bytes.Equal(a.RootPEM(), storedCA.RootPEM()), SourceSelfSigned)
		}
		if n := creates(client); n != 0 {
			t.Errorf("%d secrets created, want none", n)
		}
	})

	t.Run("created when absent, then reused", func(t *testing.T) {
		client := fake.NewClientset()
		logs := &syncBuffer{}
		a, source, err := LoadOrCreate(t.Context(), client, istiodNS, slog.New(slog.NewTextHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if source != SourceCreated {
			t.Errorf("source %q, want %q", source, SourceCreated)
		}
		s, err := client.CoreV1().Secrets(istiodNS).Get(t.Context(), SelfSignedSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("istio-ca-secret not stored: %v", err)
		}
		if s.Type != "istio.io/ca-root" {
			t.Errorf("secret type %q, want istio.io/ca-root", s.Type)
		}
		if _, err := Load(s.Data); err != nil {
			t.Errorf("stored secret does not load: %v", err)
		}
		if !strings.Contains(logs.String(), "created a self-signed CA") {
			t.Errorf("creation not logged: %s", logs)
		}
		again, source, err := LoadOrCreate(t.Context(), client, istiodNS, nil)
		if err != nil {
			t.Fatal(err)
		}
		if source != SourceSelfSigned || !bytes.Equal(again.RootPEM(), a.RootPEM()) {
			t.Errorf("second start: source %q, same root %v; want the root created first", source, bytes.Equal(again.RootPEM(), a.RootPEM()))
		}
	})

	t.Run("lost the creation race", func(t *testing.T) {
		client := fake.NewClientset()
		// Another istiod stores its root between our Get and our Create.
		client.PrependReactor("create", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
			if err := client.Tracker().Add(stored); err != nil {
				t.Error(err)
			}
			return true, nil, apierrors.NewAlreadyExists(corev1.Resource("secrets"), SelfSignedSecret)
		})
		a, source, err := LoadOrCreate(t.Context(), client, istiodNS, nil)
		if err != nil {
			t.Fatal(err)
		}
		if source != SourceSelfSigned || !bytes.Equal(a.RootPEM(), storedCA.RootPEM()) {
			t.Errorf("source %q, same root as the winner %v; want %q and the winner's root", source, bytes.Equal(a.RootPEM(), storedCA.RootPEM()), SourceSelfSigned)
		}
	})

	other := newTestCA(t, "other", nil, true, time.Hour)
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		want    []string // in the error
	}{
		{
			name: "cacerts with a key that does not match",
			objects: []runtime.Object{stored, func() runtime.Object {
				s := cacerts.DeepCopy()
				s.Data[KeyFile] = other.keyPEM(t)
				return s
			}()},
			want: []string{istiodNS + "/" + CACertsSecret, KeyFile},
		},
		{
			name: "cacerts without a certificate",
			objects: []runtime.Object{func() runtime.Object {
				s := cacerts.DeepCopy()
				delete(s.Data, CertFile)
				return s
			}()},
			want: []string{istiodNS + "/" + CACertsSecret, CertFile},
		},
		{
			name: "cacerts chaining to another root",
			objects: []runtime.Object{func() runtime.Object {
				s := cacerts.DeepCopy()
				s.Data[RootFile] = other.certPEM()
				return s
			}()},
			want: []string{istiodNS + "/" + CACertsSecret, RootFile},
		},
		{
			name: "istio-ca-secret corrupted",
			objects: []runtime.Object{func() runtime.Object {
				s := stored.DeepCopy()
				s.Data[KeyFile] = []byte("junk")
				return s
			}()},
			want: []string{istiodNS + "/" + SelfSignedSecret, KeyFile},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.objects...)
			a, _, err := LoadOrCreate(t.Context(), client, istiodNS, nil)
			if err == nil {
				t.Fatalf("loaded an authority (root %q), want an error", a.root.Subject)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			// Never a fallback: nothing else is loaded or created.
			if n := creates(client); n != 0 {
				t.Errorf("%d secrets created after a refusal", n)
			}
		})
	}

	t.Run("API error is not absence", func(t *testing.T) {
		client := fake.NewClientset()
		client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), CACertsSecret, errors.New("istiod lacks RBAC"))
		})
		if _, _, err := LoadOrCreate(t.Context(), client, istiodNS, nil); !apierrors.IsForbidden(err) {
			t.Fatalf("error %v, want the Forbidden", err)
		}
		if n := creates(client); n != 0 {
			t.Errorf("%d secrets created although cacerts could not be read", n)
		}
	})

	t.Run("create fails", func(t *testing.T) {
		client := fake.NewClientset()
		client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), SelfSignedSecret, errors.New("istiod lacks RBAC"))
		})
		if _, _, err := LoadOrCreate(t.Context(), client, istiodNS, nil); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), SelfSignedSecret) {
			t.Fatalf("error %v, want the Forbidden naming %s", err, SelfSignedSecret)
		}
	})
}
