package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
)

// The TLS hop mirrors HBONE's outer layer as ztunnel speaks it: TLS 1.3
// only, ALPN h2, mutual certificate auth with SPIFFE identities, no session
// resumption. Key exchange is plain X25519 (no hybrid post-quantum share) so
// that handshakes cost what a classic ECDHE handshake costs.
const (
	wantCipher = tls.TLS_AES_128_GCM_SHA256
	wantALPN   = "h2"
)

// errTLSParams reports a negotiated connection that is not the one under
// test; measuring it anyway would measure something else.
var errTLSParams = errors.New("unexpected TLS parameters")

// tlsFiles names what one TLS end needs.
type tlsFiles struct {
	CA, Cert, Key string
	PeerID        string // SPIFFE identity the peer must present
}

func (f tlsFiles) load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load key pair: %w", err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("read ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("no certificate in %s", f.CA)
	}
	return cert, roots, nil
}

func baseTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		NextProtos:             []string{wantALPN},
		CurvePreferences:       []tls.CurveID{tls.X25519},
		SessionTicketsDisabled: true,
		// Full-size records from the first byte: the throughput runs measure
		// the steady state, not the ramp-up meant for browsers.
		DynamicRecordSizingDisabled: true,
	}
}

// clientTLSConfig verifies the server by its SPIFFE identity rather than a
// host name, as HBONE clients do: the chain must lead to the CA and the URI
// SAN must be the expected one.
func clientTLSConfig(f tlsFiles) (*tls.Config, error) {
	cert, roots, err := f.load()
	if err != nil {
		return nil, err
	}
	cfg := baseTLSConfig(cert)
	// Host name verification does not apply to SPIFFE identities;
	// VerifyConnection does the whole check instead.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPeer(cs, roots, f.PeerID, x509.ExtKeyUsageServerAuth)
	}
	return cfg, nil
}

// serverTLSConfig requires a client certificate from the CA with the
// expected identity.
func serverTLSConfig(f tlsFiles) (*tls.Config, error) {
	cert, roots, err := f.load()
	if err != nil {
		return nil, err
	}
	cfg := baseTLSConfig(cert)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = roots
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPeer(cs, roots, f.PeerID, x509.ExtKeyUsageClientAuth)
	}
	return cfg, nil
}

func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool, wantID string, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("verify peer chain: %w", err)
	}
	if !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == wantID }) {
		return fmt.Errorf("peer identity is not %s", wantID)
	}
	return nil
}

// checkTLSState fails a handshake that did not negotiate what the benchmark
// claims to measure.
func checkTLSState(cs tls.ConnectionState) error {
	if cs.Version != tls.VersionTLS13 || cs.CipherSuite != wantCipher || cs.NegotiatedProtocol != wantALPN {
		return fmt.Errorf("%w: version %s, cipher %s, alpn %q", errTLSParams,
			tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.NegotiatedProtocol)
	}
	return nil
}
