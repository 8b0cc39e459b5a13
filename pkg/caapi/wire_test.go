package caapi

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	istio "istio.io/api/security/v1alpha1"
)

// Our messages and Istio's generated ones read each other's bytes: what
// ztunnel sends is what Istio's CA parses, and back.

func TestRequestReadsAsIstios(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{ImpersonatedIdentity: "spiffe://cluster.local/ns/a/sa/b"})
	ours := &CertificateRequest{Csr: "-----BEGIN CERTIFICATE REQUEST-----\n...", ValidityDuration: 86400, Metadata: md}
	b, err := proto.Marshal(ours)
	if err != nil {
		t.Fatal(err)
	}
	var theirs istio.IstioCertificateRequest
	if err := proto.Unmarshal(b, &theirs); err != nil {
		t.Fatal(err)
	}
	want := &istio.IstioCertificateRequest{Csr: ours.Csr, ValidityDuration: 86400, Metadata: md}
	if !proto.Equal(&theirs, want) {
		t.Fatalf("Istio reads %v, want %v", &theirs, want)
	}
	if len(theirs.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("Istio's message has unknown fields: %x", theirs.ProtoReflect().GetUnknown())
	}
	back, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var again CertificateRequest
	if err := proto.Unmarshal(back, &again); err != nil || !proto.Equal(&again, ours) {
		t.Fatalf("Istio's bytes read back as %v (%v), want %v", &again, err, ours)
	}
}

func TestResponseReadsAsIstios(t *testing.T) {
	theirs := &istio.IstioCertificateResponse{CertChain: []string{"leaf", "intermediate", "root"}}
	b, err := proto.Marshal(theirs)
	if err != nil {
		t.Fatal(err)
	}
	var ours CertificateResponse
	if err := proto.Unmarshal(b, &ours); err != nil {
		t.Fatal(err)
	}
	if got := ours.GetCertChain(); len(got) != 3 || got[0] != "leaf" || got[2] != "root" {
		t.Fatalf("chain = %q", got)
	}
	if len(ours.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("unknown fields: %x", ours.ProtoReflect().GetUnknown())
	}
}
