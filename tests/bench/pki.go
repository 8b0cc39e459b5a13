package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ambient-mesh/mesh/tests/controlplane"
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

// newPKI writes a CA and one ECDSA P-256 leaf per SPIFFE id into dir, from
// the same throwaway authority the test control plane uses. Leaves are good
// for both client and server auth, as workload certificates are.
func newPKI(dir string, ids ...string) (*PKI, error) {
	ca, err := controlplane.NewAuthority()
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), leaves: map[string]CertFiles{}}
	if err := writePEM(p.CAFile, "CERTIFICATE", ca.Cert.Raw); err != nil {
		return nil, err
	}
	for i, id := range ids {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("leaf key: %w", err)
		}
		cert, err := ca.Sign(&key.PublicKey, []string{id}, nil, 24*time.Hour)
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
		if err := writePEM(f.Cert, "CERTIFICATE", cert.Raw); err != nil {
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
