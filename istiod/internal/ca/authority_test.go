package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestSelfSignedRoundTrip(t *testing.T) {
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	root := a.cert
	if !root.IsCA || root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root IsCA=%v KeyUsage=%v", root.IsCA, root.KeyUsage)
	}
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", root.PublicKey)
	}
	if got := root.NotAfter.Sub(root.NotBefore); got < DefaultRootTTL || got > DefaultRootTTL+2*time.Minute {
		t.Errorf("root validity %v, want about %v", got, DefaultRootTTL)
	}
	if got := root.Subject.Organization; len(got) != 1 || got[0] != "cluster.local" {
		t.Errorf("root organisation %v", got)
	}

	files := a.Marshal()
	if len(files) != 2 || files[CertFile] == nil || files[KeyFile] == nil {
		t.Fatalf("Marshal of a self-signed root has keys %v, want %s and %s", keys(files), CertFile, KeyFile)
	}
	// Istio writes empty chain and root keys into istio-ca-secret.
	files[ChainFile], files[RootFile] = []byte{}, []byte{}
	b, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.RootPEM(), b.RootPEM()) || !bytes.Equal(a.Marshal()[KeyFile], b.Marshal()[KeyFile]) {
		t.Error("Load(Marshal()) gave a different authority")
	}
	chain, err := b.Sign(csrPEM(t, newP256(t)), sleepID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if certs := parseChain(t, chain, a.RootPEM()); len(certs) != 2 {
		t.Errorf("self-signed chain has %d certificates, want leaf and root", len(certs))
	}
}

func TestLoadCacertsWithIntermediate(t *testing.T) {
	root := newTestCA(t, "root", nil, true, 48*time.Hour)
	inter := newTestCA(t, "intermediate", root, true, 24*time.Hour)
	for name, chainFile := range map[string][]byte{
		// The usual `cat ca-cert.pem root-cert.pem > cert-chain.pem`.
		"signing cert and root": append(inter.certPEM(), root.certPEM()...),
		"root only":             root.certPEM(),
		"empty":                 nil,
	} {
		t.Run(name, func(t *testing.T) {
			a, err := Load(map[string][]byte{
				CertFile:  inter.certPEM(),
				KeyFile:   inter.keyPEM(t),
				ChainFile: chainFile,
				RootFile:  root.certPEM(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.RootPEM(), root.certPEM()) {
				t.Error("RootPEM is not root-cert.pem")
			}
			for _, a := range []*Authority{a, reload(t, a)} {
				chain, err := a.Sign(csrPEM(t, newP256(t)), sleepID, time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				certs := parseChain(t, chain, root.certPEM())
				if len(certs) != 3 || !certs[1].Equal(inter.cert) || !certs[2].Equal(root.cert) {
					t.Fatalf("chain is not leaf, intermediate, root: %d certs", len(certs))
				}
			}
		})
	}
}

func TestLoadTwoIntermediates(t *testing.T) {
	root := newTestCA(t, "root", nil, true, 48*time.Hour)
	mid := newTestCA(t, "mid", root, true, 24*time.Hour)
	signer := newTestCA(t, "signer", mid, true, 24*time.Hour)
	a, err := Load(map[string][]byte{
		CertFile:  signer.certPEM(),
		KeyFile:   signer.keyPEM(t),
		ChainFile: append(append(signer.certPEM(), mid.certPEM()...), root.certPEM()...),
		RootFile:  root.certPEM(),
	})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(csrPEM(t, newP256(t)), sleepID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs := parseChain(t, chain, root.certPEM())
	if len(certs) != 4 || !certs[1].Equal(signer.cert) || !certs[2].Equal(mid.cert) || !certs[3].Equal(root.cert) {
		t.Fatalf("chain is not leaf, signer, mid, root: %d certs", len(certs))
	}
}

func TestLoadRefuses(t *testing.T) {
	root := newTestCA(t, "root", nil, true, 48*time.Hour)
	inter := newTestCA(t, "intermediate", root, true, 24*time.Hour)
	deep := newTestCA(t, "deep", inter, true, 24*time.Hour)
	other := newTestCA(t, "other root", nil, true, 48*time.Hour)
	leafLike := newTestCA(t, "not a CA", root, false, 24*time.Hour)
	expired := newTestCA(t, "expired", nil, true, -time.Minute)
	good := func() map[string][]byte {
		return map[string][]byte{
			CertFile:  inter.certPEM(),
			KeyFile:   inter.keyPEM(t),
			ChainFile: inter.certPEM(),
			RootFile:  root.certPEM(),
		}
	}
	for _, tc := range []struct {
		name   string
		change func(map[string][]byte)
		field  string
	}{
		{"missing cert", func(f map[string][]byte) { delete(f, CertFile) }, CertFile},
		{"garbage cert", func(f map[string][]byte) { f[CertFile] = []byte("hello") }, CertFile},
		{"two certs", func(f map[string][]byte) { f[CertFile] = append(inter.certPEM(), root.certPEM()...) }, CertFile},
		{"key in cert file", func(f map[string][]byte) { f[CertFile] = inter.keyPEM(t) }, CertFile},
		{"not a CA", func(f map[string][]byte) { f[CertFile], f[KeyFile] = leafLike.certPEM(), leafLike.keyPEM(t) }, CertFile},
		{"missing key", func(f map[string][]byte) { delete(f, KeyFile) }, KeyFile},
		{"mismatched key", func(f map[string][]byte) { f[KeyFile] = root.keyPEM(t) }, KeyFile},
		{"garbage key", func(f map[string][]byte) {
			f[KeyFile] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("junk")})
		}, KeyFile},
		{"chain not reaching the root", func(f map[string][]byte) { f[RootFile] = other.certPEM() }, RootFile},
		{"chain missing an intermediate", func(f map[string][]byte) {
			f[CertFile], f[KeyFile], f[ChainFile] = deep.certPEM(), deep.keyPEM(t), deep.certPEM()
		}, ChainFile},
		{"garbage chain", func(f map[string][]byte) {
			f[ChainFile] = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, ChainFile},
		{"garbage root", func(f map[string][]byte) { f[RootFile] = append(root.certPEM(), "junk"...) }, RootFile},
		{"no root and not self-signed", func(f map[string][]byte) { delete(f, RootFile) }, RootFile},
		{"expired", func(f map[string][]byte) {
			f[CertFile], f[KeyFile], f[RootFile] = expired.certPEM(), expired.keyPEM(t), nil
		}, CertFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := good()
			tc.change(f)
			_, err := Load(f)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Load error %v, want one naming %s", err, tc.field)
			}
		})
	}
	if _, err := Load(good()); err != nil {
		t.Fatalf("the unchanged files do not load: %v", err)
	}
}

func TestLoadRSAKeyForms(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rsa root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for typ, der := range map[string][]byte{"RSA PRIVATE KEY": x509.MarshalPKCS1PrivateKey(key), "PRIVATE KEY": pkcs8} {
		a, err := Load(map[string][]byte{CertFile: certFile, KeyFile: pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})})
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		chain, err := a.Sign(csrPEM(t, newP256(t)), sleepID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		parseChain(t, chain, certFile)
	}
}

func TestSignLeaf(t *testing.T) {
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	// The CSR asks for someone else's identity and a host name: both ignored.
	chain, err := a.Sign(csrPEM(t, newP256(t), "spiffe://cluster.local/ns/kube-system/sa/admin"), sleepID, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	leaf := parseChain(t, chain, a.RootPEM())[0]
	onlyURI(t, leaf, sleepID)
	if leaf.Subject.CommonName != "" {
		t.Errorf("leaf subject %q copied from the CSR", leaf.Subject)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("KeyUsage = %v", leaf.KeyUsage)
	}
	if eku := leaf.ExtKeyUsage; len(eku) != 2 || eku[0] != x509.ExtKeyUsageServerAuth || eku[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v", eku)
	}
	if bits := leaf.SerialNumber.BitLen(); leaf.SerialNumber.Sign() <= 0 || bits > 128 || bits < 64 {
		t.Errorf("serial %v has %d bits", leaf.SerialNumber, bits)
	}
	if nb := leaf.NotBefore; nb.Before(before.Add(-clockSkew-time.Second)) || nb.After(after.Add(-clockSkew)) {
		t.Errorf("NotBefore %v, want about now-%v", nb, clockSkew)
	}
	if na := leaf.NotAfter; na.Before(before.Add(2*time.Hour)) || na.After(after.Add(2*time.Hour)) {
		t.Errorf("NotAfter %v, want about now+2h", na)
	}

	// Serials differ between certificates.
	again, err := a.Sign(csrPEM(t, newP256(t)), sleepID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if parseChain(t, again, a.RootPEM())[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two leaves share a serial number")
	}
}

func TestSignClampsToSigner(t *testing.T) {
	root := newTestCA(t, "root", nil, true, 48*time.Hour)
	inter := newTestCA(t, "intermediate", root, true, time.Hour)
	a, err := Load(map[string][]byte{CertFile: inter.certPEM(), KeyFile: inter.keyPEM(t), RootFile: root.certPEM()})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(csrPEM(t, newP256(t)), sleepID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if leaf := parseChain(t, chain, root.certPEM())[0]; !leaf.NotAfter.Equal(inter.cert.NotAfter) {
		t.Errorf("leaf NotAfter %v, want the signer's %v", leaf.NotAfter, inter.cert.NotAfter)
	}
}

func TestSignKeys(t *testing.T) {
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  func() (crypto.Signer, error)
		ok   bool
	}{
		{"P-256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }, true},
		{"P-384", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }, true},
		{"P-521", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) }, false},
		{"RSA-2048", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }, true},
		{"RSA-1024", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 1024) }, false},
		{"Ed25519", func() (crypto.Signer, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := tc.key()
			if err != nil {
				t.Fatal(err)
			}
			chain, err := a.Sign(csrPEM(t, key), sleepID, time.Hour)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				onlyURI(t, parseChain(t, chain, a.RootPEM())[0], sleepID)
				return
			}
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("Sign = %v, want ErrBadCSR", err)
			}
		})
	}
}

func TestSignRefusesBadCSR(t *testing.T) {
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		t.Fatal(err)
	}
	good := csrPEM(t, newP256(t))
	badSig := csrDER(t, newP256(t))
	badSig[len(badSig)-1] ^= 1 // last byte of the signature
	for _, tc := range []struct {
		name string
		csr  []byte
		want string
	}{
		{"empty", nil, "not PEM"},
		{"not PEM", []byte("MIIBhello"), "not PEM"},
		{"DER without PEM", csrDER(t, newP256(t)), "not PEM"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig}), "signature"},
		{"trailing data", append(append([]byte{}, good...), "junk"...), "trailing"},
		{"two CSRs", append(append([]byte{}, good...), good...), "trailing"},
		{"wrong block type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: csrDER(t, newP256(t))}), "CERTIFICATE REQUEST"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("garbage")}), "asn1"},
		{"oversize", append(append([]byte{}, good...), bytes.Repeat([]byte(" "), MaxCSRSize)...), "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Sign(tc.csr, sleepID, time.Hour)
			if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign = %v, want ErrBadCSR mentioning %q", err, tc.want)
			}
		})
	}
	// Whitespace after the block is not junk.
	if _, err := a.Sign(append(append([]byte{}, good...), "\n\n"...), sleepID, time.Hour); err != nil {
		t.Fatalf("trailing newlines refused: %v", err)
	}
}

func reload(t *testing.T, a *Authority) *Authority {
	t.Helper()
	b, err := Load(a.Marshal())
	if err != nil {
		t.Fatalf("Load(Marshal()): %v", err)
	}
	return b
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestServingCertificate(t *testing.T) {
	a, err := NewSelfSigned("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ServingCertificate(nil, time.Hour); err == nil {
		t.Error("no DNS names: no error")
	}
	names := []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}
	c, err := a.ServingCertificate(names, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(a.RootPEM())
	for _, n := range names {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if !c.Leaf.NotAfter.Before(time.Now().Add(2 * time.Hour)) {
		t.Errorf("leaf outlives the root: %v", c.Leaf.NotAfter)
	}
	if len(c.Certificate) != 1 {
		t.Errorf("chain of %d for a self-signed root, want the leaf only", len(c.Certificate))
	}
}
