package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"time"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

// Keys of Istio's CA secrets. istio-ca-secret (istiod's self-signed root)
// holds CertFile and KeyFile; a user-supplied cacerts secret adds ChainFile
// and RootFile.
const (
	CertFile  = "ca-cert.pem"
	KeyFile   = "ca-key.pem"
	ChainFile = "cert-chain.pem"
	RootFile  = "root-cert.pem"
)

const (
	// DefaultRootTTL is the validity of a self-signed root.
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
	// MaxCSRSize bounds the PEM CSR we parse: a real one is well under 2 KiB.
	MaxCSRSize = 64 << 10
	// clockSkew backdates NotBefore so a peer whose clock is a little behind
	// ours still accepts a fresh certificate.
	clockSkew = time.Minute
	// maxRSABits bounds the work one CSR can cost us.
	maxRSABits = 8192
)

// ErrBadCSR is wrapped by every error caused by the CSR itself, so callers
// can tell the client's fault from ours.
var ErrBadCSR = errors.New("bad certificate signing request")

// Authority is a signing certificate and key, the intermediates between it
// and the root (possibly none), and the trusted roots. It is immutable, so
// Sign is safe for concurrent use.
type Authority struct {
	cert  *x509.Certificate
	key   crypto.Signer
	inter []*x509.Certificate // issuer of cert first, up to (excluding) the root
	root  *x509.Certificate   // the root cert chains to
	roots []*x509.Certificate // every trusted root, root among them
	// notAfter is the earliest expiry on the chain: no leaf may outlive it.
	notAfter time.Time
}

// NewSelfSigned creates an ECDSA P-256 root for organisation org, valid for
// ttl (DefaultRootTTL if ttl <= 0), that signs workload certificates itself.
func NewSelfSigned(org string, ttl time.Duration) (*Authority, error) {
	if ttl <= 0 {
		ttl = DefaultRootTTL
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{org}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	return newAuthority(cert, key, nil, cert, []*x509.Certificate{cert}), nil
}

func newAuthority(cert *x509.Certificate, key crypto.Signer, inter []*x509.Certificate, root *x509.Certificate, roots []*x509.Certificate) *Authority {
	a := &Authority{cert: cert, key: key, inter: inter, root: root, roots: roots, notAfter: cert.NotAfter}
	for _, c := range inter {
		a.notAfter = earlier(a.notAfter, c.NotAfter)
	}
	a.notAfter = earlier(a.notAfter, root.NotAfter)
	return a
}

// Load builds an Authority from the data of istio-ca-secret (CertFile,
// KeyFile) or of a cacerts secret (all four keys). Empty values count as
// absent, as Istio writes empty ChainFile and RootFile into istio-ca-secret.
// It checks that the key matches the certificate, that the certificate is a
// CA, and that it chains through ChainFile to RootFile (or is itself a root
// when RootFile is absent). Errors name the offending key.
func Load(files map[string][]byte) (*Authority, error) {
	certs, err := parseCerts(CertFile, files[CertFile])
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: want 1 certificate, found %d", CertFile, len(certs))
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("%s: %q is not a CA certificate", CertFile, cert.Subject)
	}
	// An absent KeyUsage means "any"; a present one must allow signing certs.
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: %q lacks the certificate-signing key usage", CertFile, cert.Subject)
	}
	key, err := parseKey(files[KeyFile])
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s: key does not match the public key of %s", KeyFile, CertFile)
	}

	chain, err := parseCerts(ChainFile, files[ChainFile])
	if err != nil {
		return nil, err
	}
	roots, err := parseCerts(RootFile, files[RootFile])
	if err != nil {
		return nil, err
	}
	if len(roots) == 0 {
		// istio-ca-secret: the signing certificate is the root.
		if err := cert.CheckSignatureFrom(cert); err != nil || !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
			return nil, fmt.Errorf("%s: missing, and %s is not self-signed", RootFile, CertFile)
		}
		roots = []*x509.Certificate{cert}
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	interPool := x509.NewCertPool()
	for _, c := range chain {
		interPool.AddCert(c)
	}
	// cert-chain.pem is often built as `cat ca-cert.pem root-cert.pem`, so it
	// may repeat the signing certificate and the root; verification sorts it
	// out and tells us the path actually used.
	paths, err := cert.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: interPool,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%s does not chain through %s to %s: %w", CertFile, ChainFile, RootFile, err)
	}
	path := paths[0]
	root := path[len(path)-1]
	var inter []*x509.Certificate
	if len(path) > 1 {
		inter = path[1 : len(path)-1]
	}
	return newAuthority(cert, key, inter, root, roots), nil
}

// Marshal returns the authority in the istio-ca-secret layout. ChainFile
// and RootFile are written only when the signing certificate is not the one
// and only root, so that Load gives back the same authority.
func (a *Authority) Marshal() map[string][]byte {
	der, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		// The key came from parseKey or GenerateKey, whose types PKCS#8 covers.
		panic(fmt.Sprintf("marshal CA key: %v", err))
	}
	out := map[string][]byte{
		CertFile: certPEM(a.cert),
		KeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	}
	if !a.cert.Equal(a.root) || len(a.roots) > 1 {
		var chain []byte
		for _, c := range a.inter {
			chain = append(chain, certPEM(c)...)
		}
		out[ChainFile] = append(chain, certPEM(a.root)...)
		out[RootFile] = a.RootPEM()
	}
	return out
}

// RootExpiry returns when the root the signing certificate chains to
// expires.
func (a *Authority) RootExpiry() time.Time {
	return a.root.NotAfter
}

// ChainExpiry returns the earliest expiry on the signing chain, root
// included: no certificate it issues outlives it.
func (a *Authority) ChainExpiry() time.Time {
	return a.notAfter
}

// RootPEM returns every trusted root, PEM encoded, for the mesh trust bundle.
func (a *Authority) RootPEM() []byte {
	var out []byte
	for _, r := range a.roots {
		out = append(out, certPEM(r)...)
	}
	return out
}

// Sign issues a workload certificate for id, valid for ttl but never past
// the signing chain's expiry, for the key in csrPEM. The CSR contributes only
// its public key: its subject and SANs are ignored because the identity comes
// from authenticating the caller, never from what the caller asks for. It
// returns the chain leaf first, root last, one PEM certificate per string.
func (a *Authority) Sign(csrPEM []byte, id spiffe.Identity, ttl time.Duration) ([]string, error) {
	pub, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	// Re-parse so a hand-built Identity cannot smuggle a malformed URI.
	if _, err := spiffe.Parse(id.String()); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("sign: non-positive ttl %v", ttl)
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(a.notAfter) {
		notAfter = a.notAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("sign: signing chain expired at %v", a.notAfter)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(id.String())
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign: create certificate: %w", err)
	}
	out := []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
	if !a.cert.Equal(a.root) {
		out = append(out, string(certPEM(a.cert)))
	}
	for _, c := range a.inter {
		out = append(out, string(certPEM(c)))
	}
	return append(out, string(certPEM(a.root))), nil
}

// parseCSR returns the public key of a PEM CSR after checking its shape,
// its self-signature and its key type.
func parseCSR(data []byte) (crypto.PublicKey, error) {
	if len(data) > MaxCSRSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadCSR, len(data), MaxCSRSize)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: not PEM", ErrBadCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrBadCSR, block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %d bytes of trailing data after the PEM block", ErrBadCSR, len(rest))
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	// Proof of possession: the requester holds the private key.
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not allowed, want P-256 or P-384", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 || bits > maxRSABits {
			return nil, fmt.Errorf("%w: RSA key of %d bits not allowed, want 2048 to %d", ErrBadCSR, bits, maxRSABits)
		}
	default:
		return nil, fmt.Errorf("%w: key type %T not allowed, want ECDSA or RSA", ErrBadCSR, k)
	}
	return csr.PublicKey, nil
}

// parseCerts reads zero or more PEM certificates, refusing anything else in
// the data so a pasted key or stray text is reported rather than skipped.
func parseCerts(name string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		rest := bytes.TrimSpace(data)
		if len(rest) == 0 {
			return certs, nil
		}
		block, next := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%s: not PEM after certificate %d", name, len(certs))
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q, want CERTIFICATE", name, len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", name, len(certs)+1, err)
		}
		certs = append(certs, c)
		data = next
	}
}

// parseKey reads the forms Istio writes or accepts for ca-key.pem: PKCS#8,
// SEC 1 EC and PKCS#1 RSA.
func parseKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: missing or not PEM", KeyFile)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%s: trailing data after the key", KeyFile)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block is %q, want a private key", KeyFile, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyFile, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%s: key type %T not supported, want ECDSA or RSA", KeyFile, key)
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// randomSerial returns a uniformly random serial in [1, 2^128): unique
// without coordination, and unpredictable as RFC 5280 and the CA/B
// guidance on serial entropy ask.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	limit.Sub(limit, big.NewInt(1))
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// ServingCertificate issues a TLS server certificate for dnsNames, such as
// istiod's own "istiod.<ns>.svc", with a new ECDSA P-256 key that never
// leaves memory. It is valid for ttl, but never past the signing chain's
// expiry. The chain is leaf first and excludes the root, which clients
// already hold.
func (a *Authority) ServingCertificate(dnsNames []string, ttl time.Duration) (tls.Certificate, error) {
	if len(dnsNames) == 0 || ttl <= 0 {
		return tls.Certificate{}, errors.New("serving certificate: DNS names and a positive ttl required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serving certificate: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: dnsNames[0]},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              earlier(now.Add(ttl), a.notAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              slices.Clone(dnsNames),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serving certificate: %w", err)
	}
	chain := [][]byte{der}
	if !a.cert.Equal(a.root) {
		chain = append(chain, a.cert.Raw)
	}
	for _, c := range a.inter {
		chain = append(chain, c.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}
