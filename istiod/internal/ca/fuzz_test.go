package ca

import (
	"encoding/pem"
	"testing"
	"time"
)

// FuzzSign feeds arbitrary bytes to Sign as the CSR. It must never panic,
// and whatever it accepts must yield a verifying chain whose leaf names the
// requested identity and nothing else.
func FuzzSign(f *testing.F) {
	a, err := NewSelfSigned("cluster.local", 0)
	if err != nil {
		f.Fatal(err)
	}
	good := csrPEM(f, newP256(f), "spiffe://cluster.local/ns/kube-system/sa/admin")
	der := csrDER(f, newP256(f))
	f.Add(good)
	f.Add(append(append([]byte{}, good...), "junk"...))
	f.Add(good[:len(good)/2])
	f.Add(der)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der[:len(der)-3]}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	roots := a.RootPEM()
	f.Fuzz(func(t *testing.T, csr []byte) {
		chain, err := a.Sign(csr, sleepID, time.Hour)
		if err != nil {
			return
		}
		if len(chain) != 2 {
			t.Fatalf("chain has %d certificates, want 2", len(chain))
		}
		onlyURI(t, parseChain(t, chain, roots)[0], sleepID)
	})
}
