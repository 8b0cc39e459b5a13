package controlplane

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

// ImpersonatedIdentity is the request metadata key with which a node proxy
// asks for a certificate for a workload's identity.
const ImpersonatedIdentity = "ImpersonatedIdentity"

// defaultCertTTL is used when neither the server nor the request sets one.
const defaultCertTTL = 24 * time.Hour

// SetCATTL makes every certificate issued from now on valid for d, whatever
// was requested, so rotation tests need not wait a day. 0 restores the
// requested validity.
func (s *Server) SetCATTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.caTTL = d
}

// SetCAFailing makes CreateCertificate fail with codes.Unavailable while
// failing is true.
func (s *Server) SetCAFailing(failing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.caFailing = failing
}

// SetCAHolding makes CreateCertificate wait, without answering, while
// holding is true (a CA that is reachable but does not respond); calls
// waiting when it is set back to false go on to be served.
func (s *Server) SetCAHolding(holding bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case holding && s.caHold == nil:
		s.caHold = make(chan struct{})
	case !holding && s.caHold != nil:
		close(s.caHold)
		s.caHold = nil
	}
}

// Issued is the number of certificates issued for identity (a SPIFFE URI).
func (s *Server) Issued(identity string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued[identity]
}

type caService struct {
	pb.UnimplementedIstioCertificateServiceServer
	s *Server
}

func (c caService) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	s := c.s
	s.mu.Lock()
	failing, ttl, hold := s.caFailing, s.caTTL, s.caHold
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if failing {
		return nil, status.Error(codes.Unavailable, "CA is failing on purpose (SetCAFailing)")
	}
	if err := s.authenticate(ctx); err != nil {
		return nil, err
	}

	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil || !strings.HasSuffix(block.Type, "CERTIFICATE REQUEST") {
		return nil, status.Error(codes.InvalidArgument, "CSR is not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "parse CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR signature: %v", err)
	}

	// A node proxy names the workload in the metadata; otherwise the CSR
	// itself says who it is for.
	name := req.GetMetadata().GetFields()[ImpersonatedIdentity].GetStringValue()
	if name == "" {
		if len(csr.URIs) != 1 {
			return nil, status.Errorf(codes.InvalidArgument, "CSR has %d URI SANs and no %s metadata, want one", len(csr.URIs), ImpersonatedIdentity)
		}
		name = csr.URIs[0].String()
	}
	id, err := spiffe.Parse(name)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "identity: %v", err)
	}

	if ttl == 0 {
		ttl = time.Duration(req.GetValidityDuration()) * time.Second
	}
	if ttl <= 0 {
		ttl = defaultCertTTL
	}
	leaf, err := s.opts.Authority.Sign(csr.PublicKey, []string{id.String()}, nil, ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign for %s: %v", id, err)
	}

	s.mu.Lock()
	s.issued[id.String()]++
	s.mu.Unlock()
	s.log.Debug("issued certificate", "identity", id.String(), "ttl", ttl, "serial", leaf.SerialNumber)
	return &pb.IstioCertificateResponse{CertChain: []string{
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})),
		string(s.opts.Authority.RootPEM()),
	}}, nil
}

// authenticate checks the bearer token in the call's metadata.
func (s *Server) authenticate(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) != 1 {
		return status.Errorf(codes.Unauthenticated, "want one authorization header, got %d", len(values))
	}
	token, ok := strings.CutPrefix(values[0], "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(s.opts.Token)) != 1 {
		return status.Error(codes.Unauthenticated, "bad bearer token")
	}
	return nil
}
