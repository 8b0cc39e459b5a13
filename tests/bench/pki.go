package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway CA and one leaf per identity, as PEM files in Dir. It
// lives for one run: nothing here is meant to be trusted beyond it.
type PKI struct {
	Dir    string
	CAFile string
	leaves map[string]CertFiles
}

// CertFiles names a leaf's certificate and key files.
type CertFiles struct {
	Cert, Key string
	// ID is the SPIFFE identity in the certificate's URI SAN, which peers
	// check, as HBONE peers do.
	ID string
}

// Leaf returns the files of the leaf for id.
func (p *PKI) Leaf(id string) (CertFiles, bool) {
	f, ok := p.leaves[id]
	return f, ok
}

// newPKI writes a CA and one ECDSA P-256 leaf per SPIFFE id into dir. Leaves
// are good for both client and server auth, as workload certificates are.
func newPKI(dir string, ids ...string) (*PKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"netbench"}, CommonName: "netbench throwaway CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca cert: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse ca cert: %w", err)
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), leaves: map[string]CertFiles{}}
	if err := writePEM(p.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	for i, id := range ids {
		u, err := url.Parse(id)
		if err != nil {
			return nil, fmt.Errorf("identity %q: %w", id, err)
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("leaf key: %w", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i) + 2),
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			URIs:         []*url.URL{u},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, fmt.Errorf("leaf cert %s: %w", id, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("leaf key %s: %w", id, err)
		}
		f := CertFiles{
			Cert: filepath.Join(dir, fmt.Sprintf("leaf%d.pem", i)),
			Key:  filepath.Join(dir, fmt.Sprintf("leaf%d-key.pem", i)),
			ID:   id,
		}
		if err := writePEM(f.Cert, "CERTIFICATE", der); err != nil {
			return nil, err
		}
		if err := writePEM(f.Key, "PRIVATE KEY", keyDER); err != nil {
			return nil, err
		}
		p.leaves[id] = f
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
