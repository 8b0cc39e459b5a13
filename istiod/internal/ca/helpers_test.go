package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	sleepID   = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "sleep"}
	httpbinID = spiffe.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "httpbin"}
)

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrDER builds a CSR for key that asks for uris (which the CA must ignore).
func csrDER(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin"},
		DNSNames:       []string{"kubernetes.default.svc"},
		EmailAddresses: []string{"root@example.com"},
	}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func csrPEM(t testing.TB, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER(t, key, uris...)})
}

// testCert is a CA certificate built by the test, independent of the code
// under test.
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newTestCA issues a CA certificate signed by parent (self-signed if nil).
func newTestCA(t testing.TB, name string, parent *testCert, isCA bool, ttl time.Duration) *testCert {
	t.Helper()
	key := newP256(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(ttl),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if !isCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}

func (c *testCert) certPEM() []byte { return certPEM(c.cert) }

func (c *testCert) keyPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// parseChain parses a CertChain answer and verifies the leaf against
// rootsPEM using the certificates in between.
func parseChain(t testing.TB, chain []string, rootsPEM []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for i, s := range chain {
		block, rest := pem.Decode([]byte(s))
		if block == nil || len(rest) != 0 {
			t.Fatalf("chain[%d] is not exactly one PEM block", i)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("chain[%d]: %v", i, err)
		}
		certs = append(certs, c)
	}
	if len(certs) < 2 {
		t.Fatalf("chain has %d certificates, want leaf and root at least", len(certs))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		t.Fatal("no roots")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	last := certs[len(certs)-1]
	if !containsCert(rootsPEM, last) {
		t.Fatalf("last certificate %q is not a root", last.Subject)
	}
	return certs
}

func containsCert(pemData []byte, c *x509.Certificate) bool {
	for {
		var block *pem.Block
		block, pemData = pem.Decode(pemData)
		if block == nil {
			return false
		}
		if string(block.Bytes) == string(c.Raw) {
			return true
		}
	}
}

// onlyURI fails unless leaf names id and nothing else.
func onlyURI(t testing.TB, leaf *x509.Certificate, id spiffe.Identity) {
	t.Helper()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Fatalf("leaf URIs = %v, want only %s", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
		t.Fatalf("leaf has extra SANs: %v %v %v", leaf.DNSNames, leaf.EmailAddresses, leaf.IPAddresses)
	}
}
