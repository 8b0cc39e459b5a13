package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// Authority is an in-memory root CA (ECDSA P-256). It does not take a
// testing.TB because the benchmark binary uses it too.
type Authority struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// rootValidity only has to outlive a test run or a benchmark; the root is
// never written to disk.
const rootValidity = 7 * 24 * time.Hour

// serverValidity is the serving certificate's lifetime; it is not rotated,
// so it must cover the longest benchmark.
const serverValidity = 7 * 24 * time.Hour

// NewAuthority makes a fresh self-signed root.
func NewAuthority() (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "controlplane test root", Organization: []string{"ambient-mesh tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root: %w", err)
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// RootPEM is the root certificate, PEM encoded, for clients' trust stores.
func (a *Authority) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Cert.Raw})
}

// RootPool is a pool holding only the root.
func (a *Authority) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Cert)
	return p
}

// Sign issues a leaf for pub naming the given URIs (a SPIFFE identity) and
// DNS names, valid from a minute ago (to tolerate clock skew between
// namespaces' processes) for ttl. The leaf is usable on both sides of a
// TLS connection, as mesh workload certificates are.
func (a *Authority) Sign(pub crypto.PublicKey, uris []string, dnsNames []string, ttl time.Duration) (*x509.Certificate, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("sign: ttl %v is not positive", ttl)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		DNSNames:     dnsNames,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("sign: URI SAN %q: %w", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, pub, a.Key)
	if err != nil {
		return nil, fmt.Errorf("sign %v %v: %w", uris, dnsNames, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed leaf: %w", err)
	}
	return cert, nil
}

// ServerTLS returns a serving certificate for dnsName (istiod's
// "istiod.istio-system.svc") with a fresh key, chained to the root.
func (a *Authority) ServerTLS(dnsName string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	leaf, err := a.Sign(&key.PublicKey, nil, []string{dnsName}, serverValidity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate for %s: %w", dnsName, err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return n, nil
}
