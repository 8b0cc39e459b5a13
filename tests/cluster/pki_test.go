package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: not PEM", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestIssuedCertificatesChainAndCarryTheirIdentity(t *testing.T) {
	dir := t.TempDir()
	ca, err := loadOrCreateCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	tests := []struct {
		name  string
		spec  certSpec
		usage x509.ExtKeyUsage
		host  string
	}{
		{"server", certSpec{commonName: "kube-apiserver", ips: []net.IP{net.ParseIP("10.250.0.1")}, dnsNames: []string{"kubernetes.default.svc"}, server: true}, x509.ExtKeyUsageServerAuth, "kubernetes.default.svc"},
		{"server-ip", certSpec{commonName: "kubelet", ips: []net.IP{net.ParseIP("10.250.0.11")}, server: true}, x509.ExtKeyUsageServerAuth, "10.250.0.11"},
		{"node", certSpec{commonName: "system:node:node1", organization: []string{"system:nodes"}, client: true}, x509.ExtKeyUsageClientAuth, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := ca.issue(dir, tc.name, tc.spec); err != nil {
				t.Fatal(err)
			}
			cert := readCert(t, filepath.Join(dir, tc.name+".crt"))
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if cert.Subject.CommonName != tc.spec.commonName {
				t.Errorf("CN %q, want %q", cert.Subject.CommonName, tc.spec.commonName)
			}
			if len(tc.spec.organization) > 0 && (len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != tc.spec.organization[0]) {
				t.Errorf("O %v, want %v", cert.Subject.Organization, tc.spec.organization)
			}
			// A client certificate must not pass as a server's, and back.
			other := x509.ExtKeyUsageClientAuth
			if tc.usage == other {
				other = x509.ExtKeyUsageServerAuth
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{other}}); err == nil {
				t.Errorf("certificate also valid for %v", other)
			}
		})
	}
}

func TestPKIIsKeptAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	ca1, err := loadOrCreateCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca1.issue(dir, "leaf", certSpec{commonName: "a", client: true}); err != nil {
		t.Fatal(err)
	}
	before := readCert(t, filepath.Join(dir, "leaf.crt"))
	ca2, err := loadOrCreateCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Cert.Equal(ca1.Cert) {
		t.Fatal("second run made a new CA; every kubeconfig would break")
	}
	if err := ca2.issue(dir, "leaf", certSpec{commonName: "b", client: true}); err != nil {
		t.Fatal(err)
	}
	if after := readCert(t, filepath.Join(dir, "leaf.crt")); !after.Equal(before) {
		t.Fatal("second run reissued an existing certificate")
	}
}

func TestServiceAccountKeyPair(t *testing.T) {
	dir := t.TempDir()
	if err := ensureServiceAccountKey(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "sa.pub"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
		t.Fatalf("sa.pub: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sa.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sa.key must be private: %v %v", fi.Mode(), err)
	}
}
