package spiffe

import (
	"crypto/x509"
	"errors"
	"fmt"
)

// FromCertificate returns the one SPIFFE identity in a certificate's URI
// SANs. A certificate with none, or with more than one, names no single
// workload and is refused.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := Parse(u.String())
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("%w: certificate %q has no SPIFFE URI SAN", ErrInvalid, cert.Subject.CommonName)
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("%w: certificate %q has %d SPIFFE URI SANs", ErrInvalid, cert.Subject.CommonName, len(found))
	}
}

// ErrNotAllowed is returned when a verified peer is not one of the
// identities the caller expected.
var ErrNotAllowed = errors.New("peer identity not allowed")

// VerifyPeer checks a peer's raw certificate chain (leaf first) against the
// mesh roots, for use in tls.Config.VerifyPeerCertificate with
// InsecureSkipVerify (the mesh authenticates by URI SAN, not host name). It
// returns the peer's identity, which must be in trustDomain and, when allowed
// is not empty, one of allowed.
func VerifyPeer(rawCerts [][]byte, roots *x509.CertPool, trustDomain string, allowed ...Identity) (Identity, error) {
	if len(rawCerts) == 0 {
		return Identity{}, errors.New("peer sent no certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return Identity{}, fmt.Errorf("parse peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return Identity{}, fmt.Errorf("verify peer chain: %w", err)
	}
	id, err := FromCertificate(certs[0])
	if err != nil {
		return Identity{}, err
	}
	if id.TrustDomain != trustDomain {
		return id, fmt.Errorf("%w: %s is not in trust domain %q", ErrNotAllowed, id, trustDomain)
	}
	if len(allowed) == 0 {
		return id, nil
	}
	for _, a := range allowed {
		if a == id {
			return id, nil
		}
	}
	return id, fmt.Errorf("%w: %s, want one of %v", ErrNotAllowed, id, allowed)
}
