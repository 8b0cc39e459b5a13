package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ambient-mesh/mesh/pkg/caapi"
	"github.com/ambient-mesh/mesh/pkg/rpc"
	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

// Certificate is one workload's key and chain.
type Certificate struct {
	Identity spiffe.Identity
	TLS      tls.Certificate // chain leaf first, private key in memory only
	Leaf     *x509.Certificate
	// Roots holds the root the CA returned last in the chain.
	Roots *x509.CertPool
}

// Client calls the mesh CA.
type Client struct {
	conn *rpc.Conn
	// Token returns ztunnel's current ServiceAccount token (audience
	// istio-ca); it is read on every call because the kubelet rotates it.
	Token func() (string, error)
	// TTL is the validity asked for.
	TTL time.Duration
}

// NewClient uses an established connection to the CA (TLS to istiod's
// 15012 in a cluster).
func NewClient(cc *rpc.Conn, token func() (string, error), ttl time.Duration) *Client {
	return &Client{conn: cc, Token: token, TTL: ttl}
}

// callTimeout bounds one CreateCertificate call; the manager retries.
const callTimeout = 30 * time.Second

// Fetch makes a key for id, has the CA sign it, and checks that what came
// back is a chain for that key and that identity.
func (c *Client) Fetch(ctx context.Context, id spiffe.Identity) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	uri, err := url.Parse(id.String())
	if err != nil {
		return nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{uri}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	token, err := c.Token()
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	md, err := structpb.NewStruct(map[string]any{caapi.ImpersonatedIdentity: id.String()})
	if err != nil {
		return nil, err
	}
	req := &caapi.CertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValidityDuration: int64(c.TTL / time.Second),
		Metadata:         md,
	}
	resp := &caapi.CertificateResponse{}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := c.conn.Invoke(ctx, caapi.CreateCertificateMethod, rpc.Metadata{"authorization": "Bearer " + token}, req, resp); err != nil {
		return nil, fmt.Errorf("CreateCertificate for %s: %w", id, err)
	}
	return verifyChain(id, key, resp.GetCertChain())
}

// ErrBadChain is wrapped when the CA's answer does not fit the request.
var ErrBadChain = errors.New("CA returned an unusable chain")

// verifyChain parses the PEM chain (leaf first, root last; each element may
// hold several certificates) and checks it is for our key and identity and
// chains to its root.
func verifyChain(id spiffe.Identity, key *ecdsa.PrivateKey, chain []string) (*Certificate, error) {
	var certs []*x509.Certificate
	for _, p := range chain {
		rest := []byte(p)
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadChain, err)
			}
			certs = append(certs, cert)
		}
	}
	if len(certs) < 2 {
		return nil, fmt.Errorf("%w: want leaf and root, got %d certificates", ErrBadChain, len(certs))
	}
	leaf, root := certs[0], certs[len(certs)-1]
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: leaf is not for our key", ErrBadChain)
	}
	got, err := spiffe.FromCertificate(leaf)
	if err != nil || got != id {
		return nil, fmt.Errorf("%w: leaf names %v (%v), want %s", ErrBadChain, got, err, id)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadChain, err)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range certs[:len(certs)-1] {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &Certificate{Identity: id, TLS: tc, Leaf: leaf, Roots: roots}, nil
}
