package ca

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Istio's CA secrets, in istiod's namespace.
const (
	// CACertsSecret is the user-supplied signing material ("plugged-in
	// certificates"); it takes precedence over everything else.
	CACertsSecret = "cacerts"
	// SelfSignedSecret holds the root istiod created for itself.
	SelfSignedSecret = "istio-ca-secret"
	// selfSignedSecretType is the type Istio gives istio-ca-secret.
	selfSignedSecretType corev1.SecretType = "istio.io/ca-root"
	// selfSignedOrg is the organisation of a root we create: Istio names
	// it after the trust domain, whose default this is.
	selfSignedOrg = "cluster.local"
)

// Where LoadOrCreate found its authority.
const (
	SourceCACerts    = "secret " + CACertsSecret
	SourceSelfSigned = "secret " + SelfSignedSecret
	SourceCreated    = "new self-signed root in secret " + SelfSignedSecret
)

// LoadOrCreate returns the mesh's signing authority from the secrets in
// namespace (istiod's), and says where it came from: the cacerts secret if
// present, else istio-ca-secret if present, else a new self-signed root
// that it stores in istio-ca-secret. A secret that is present but does not
// hold a usable authority is an error naming the secret and the key, never
// a reason to fall back to another source: falling back would silently
// split the mesh between two roots. When another istiod creates
// istio-ca-secret first, its root is used, so that all replicas share one.
func LoadOrCreate(ctx context.Context, client kubernetes.Interface, namespace string, log *slog.Logger) (*Authority, string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, src := range []struct{ name, source, msg string }{
		{CACertsSecret, SourceCACerts, "using the plugged-in CA"},
		{SelfSignedSecret, SourceSelfSigned, "using the stored self-signed CA"},
	} {
		a, found, err := loadSecret(ctx, client, namespace, src.name)
		if err != nil {
			return nil, "", err
		}
		if found {
			log.Info(src.msg, "secret", namespace+"/"+src.name, "expires", a.notAfter)
			return a, src.source, nil
		}
	}

	a, err := NewSelfSigned(selfSignedOrg, 0)
	if err != nil {
		return nil, "", err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SelfSignedSecret, Namespace: namespace},
		Type:       selfSignedSecretType,
		Data:       a.Marshal(),
	}
	_, err = client.CoreV1().Secrets(namespace).Create(ctx, secret, metav1.CreateOptions{})
	switch {
	case err == nil:
		log.Info("created a self-signed CA", "secret", namespace+"/"+SelfSignedSecret, "expires", a.root.NotAfter)
		return a, SourceCreated, nil
	case apierrors.IsAlreadyExists(err):
		// Another istiod won the race; use its root, not ours.
		theirs, found, err := loadSecret(ctx, client, namespace, SelfSignedSecret)
		if err == nil && !found {
			err = fmt.Errorf("secret %s/%s: already exists on create, then not found", namespace, SelfSignedSecret)
		}
		if err != nil {
			return nil, "", err
		}
		log.Info("using the self-signed CA another istiod created first", "secret", namespace+"/"+SelfSignedSecret)
		return theirs, SourceSelfSigned, nil
	default:
		return nil, "", fmt.Errorf("create secret %s/%s: %w", namespace, SelfSignedSecret, err)
	}
}

// loadSecret reads the authority in the secret name; found is false only
// when the secret does not exist.
func loadSecret(ctx context.Context, client kubernetes.Interface, namespace, name string) (a *Authority, found bool, err error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get secret %s/%s: %w", namespace, name, err)
	}
	a, err = Load(s.Data)
	if err != nil {
		// Load's errors start with the offending key.
		return nil, true, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	return a, true, nil
}
