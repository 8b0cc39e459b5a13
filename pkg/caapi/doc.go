// Package caapi holds the messages of the mesh CA's CreateCertificate call,
// wire-compatible with Istio's (istio.v1.auth.IstioCertificateService), so
// that a node proxy needs neither Istio's API module nor a full gRPC
// library to have its workloads' keys signed.
package caapi

//go:generate bash ../../tools/proto/protoc.sh ca.proto

// CreateCertificateMethod is the gRPC method that signs a CSR.
const CreateCertificateMethod = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

// ImpersonatedIdentity is the metadata key with which a node proxy asks for
// another workload's certificate.
const ImpersonatedIdentity = "ImpersonatedIdentity"
