package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	pb "istio.io/api/security/v1alpha1"

	"github.com/ambient-mesh/mesh/pkg/spiffe"
)

const (
	// DefaultTTL is the workload certificate lifetime when neither the
	// server nor the request sets one.
	DefaultTTL = 24 * time.Hour
	// ImpersonatedIdentityKey is the request metadata key with which a node
	// proxy asks for another workload's identity.
	ImpersonatedIdentityKey = "ImpersonatedIdentity"
)

// Sentinels an Authenticator wraps so the server can answer with the right
// gRPC code: a rejected token is the caller's problem (Unauthenticated, do
// not retry with the same token); an unavailable reviewer is ours
// (Unavailable, retry).
var (
	ErrTokenRejected   = errors.New("token rejected")
	ErrAuthUnavailable = errors.New("token review unavailable")
)

// Caller is an authenticated workload: its service account and, for a
// pod-bound token, its pod and node.
type Caller struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
	NodeName       string
}

func (c *Caller) String() string {
	s := c.Namespace + "/" + c.ServiceAccount
	if c.PodName != "" {
		s += " (pod " + c.Namespace + "/" + c.PodName + ")"
	}
	return s
}

// Authenticator turns a bearer token into a Caller. Errors for a bad token
// should wrap ErrTokenRejected; failures to check it, ErrAuthUnavailable.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Caller, error)
}

// PodLookup answers the questions node impersonation needs, from the
// cluster state istiod already watches.
type PodLookup interface {
	// ServiceAccountHasPodOnNode reports whether a pod running as
	// namespace/serviceAccount is scheduled on node.
	ServiceAccountHasPodOnNode(namespace, serviceAccount, node string) bool
	// NodeOfPod returns the node of the pod namespace/name, if a pod with
	// that name (and uid, when uid is not empty) exists.
	NodeOfPod(namespace, name, uid string) (string, bool)
}

// Refusal reasons, the keys of Stats.Refused.
const (
	ReasonUnauthenticated = "unauthenticated"
	ReasonAuthUnavailable = "auth_unavailable"
	ReasonBadRequest      = "bad_request"
	ReasonNotNodeAccount  = "not_node_account"
	ReasonTrustDomain     = "foreign_trust_domain"
	ReasonUnknownNode     = "unknown_node"
	ReasonNoPodOnNode     = "no_pod_on_node"
	ReasonBadCSR          = "bad_csr"
	ReasonSignFailed      = "sign_failed"
)

// Stats counts the server's answers.
type Stats struct {
	Issued  uint64
	Refused map[string]uint64 // by reason
}

// Server implements istio.v1.auth.IstioCertificateService. Set the fields
// before registering it; they are not changed afterwards.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer

	Authority   *Authority
	TrustDomain string
	// MaxTTL caps the requested validity; DefaultTTL is used when the
	// request asks for none. Both default to DefaultTTL.
	MaxTTL     time.Duration
	DefaultTTL time.Duration

	Authenticate Authenticator
	Pods         PodLookup
	// TrustedNodeAccounts are the "namespace/serviceaccount" names allowed
	// to impersonate workloads on their node, e.g. "istio-system/ztunnel".
	TrustedNodeAccounts []string
	Log                 *slog.Logger

	mu      sync.Mutex
	issued  uint64
	refused map[string]uint64
}

// Register adds s to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	pb.RegisterIstioCertificateServiceServer(g, s)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{Issued: s.issued, Refused: make(map[string]uint64, len(s.refused))}
	for k, v := range s.refused {
		out.Refused[k] = v
	}
	return out
}

// CreateCertificate authenticates the caller, decides which identity it may
// have, and signs its CSR for that identity.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	if s.Authenticate == nil || s.Authority == nil {
		return nil, s.refuse(nil, "", ReasonAuthUnavailable, codes.Unavailable, "certificate authority not configured")
	}
	token, ok := bearerToken(ctx)
	if !ok {
		return nil, s.refuse(nil, "", ReasonUnauthenticated, codes.Unauthenticated, "missing bearer token")
	}
	caller, err := s.Authenticate.Authenticate(ctx, token)
	switch {
	case errors.Is(err, ErrAuthUnavailable):
		return nil, s.refuse(nil, "", ReasonAuthUnavailable, codes.Unavailable, "authenticate: %v", err)
	case err != nil:
		return nil, s.refuse(nil, "", ReasonUnauthenticated, codes.Unauthenticated, "authenticate: %v", err)
	case caller == nil:
		return nil, s.refuse(nil, "", ReasonUnauthenticated, codes.Unauthenticated, "authenticate: no caller")
	}
	self := spiffe.Identity{TrustDomain: s.TrustDomain, Namespace: caller.Namespace, ServiceAccount: caller.ServiceAccount}
	if _, err := spiffe.Parse(self.String()); err != nil {
		return nil, s.refuse(caller, "", ReasonUnauthenticated, codes.Unauthenticated, "caller has no valid identity: %v", err)
	}

	id, err := s.identityFor(caller, self, req.GetMetadata())
	if err != nil {
		return nil, err
	}
	chain, err := s.Authority.Sign([]byte(req.GetCsr()), id, s.ttl(req.GetValidityDuration()))
	switch {
	case errors.Is(err, ErrBadCSR):
		return nil, s.refuse(caller, id.String(), ReasonBadCSR, codes.InvalidArgument, "%v", err)
	case err != nil:
		return nil, s.refuse(caller, id.String(), ReasonSignFailed, codes.Internal, "%v", err)
	}
	s.mu.Lock()
	s.issued++
	s.mu.Unlock()
	s.log().Debug("issued certificate", "caller", caller.String(), "identity", id.String())
	return &pb.IstioCertificateResponse{CertChain: chain}, nil
}

// identityFor returns the identity the caller gets: its own, or, for a
// trusted node account, that of a workload running on the same node.
func (s *Server) identityFor(caller *Caller, self spiffe.Identity, md *structpb.Struct) (spiffe.Identity, error) {
	v, present := md.GetFields()[ImpersonatedIdentityKey]
	if !present {
		return self, nil
	}
	sv, isString := v.GetKind().(*structpb.Value_StringValue)
	if !isString {
		return spiffe.Identity{}, s.refuse(caller, "", ReasonBadRequest, codes.InvalidArgument, "%s must be a string", ImpersonatedIdentityKey)
	}
	target := sv.StringValue
	if target == "" || target == self.String() {
		// Asking for one's own identity impersonates nobody.
		return self, nil
	}
	if !slices.Contains(s.TrustedNodeAccounts, caller.Namespace+"/"+caller.ServiceAccount) {
		return spiffe.Identity{}, s.refuse(caller, target, ReasonNotNodeAccount, codes.PermissionDenied, "%s/%s may not impersonate other identities", caller.Namespace, caller.ServiceAccount)
	}
	id, err := spiffe.Parse(target)
	if err != nil {
		return spiffe.Identity{}, s.refuse(caller, target, ReasonBadRequest, codes.InvalidArgument, "%s: %v", ImpersonatedIdentityKey, err)
	}
	if id.TrustDomain != s.TrustDomain {
		return spiffe.Identity{}, s.refuse(caller, target, ReasonTrustDomain, codes.PermissionDenied, "%s is not in trust domain %q", target, s.TrustDomain)
	}
	node := caller.NodeName
	if node == "" && caller.PodName != "" && s.Pods != nil {
		// Older tokens carry the pod but not the node; the pod must exist.
		node, _ = s.Pods.NodeOfPod(caller.Namespace, caller.PodName, caller.PodUID)
	}
	if node == "" {
		return spiffe.Identity{}, s.refuse(caller, target, ReasonUnknownNode, codes.PermissionDenied, "cannot tell which node %s runs on", caller)
	}
	if s.Pods == nil || !s.Pods.ServiceAccountHasPodOnNode(id.Namespace, id.ServiceAccount, node) {
		return spiffe.Identity{}, s.refuse(caller, target, ReasonNoPodOnNode, codes.PermissionDenied, "no pod with identity %s runs on node %q", target, node)
	}
	return id, nil
}

// ttl turns the requested validity in seconds into the one granted.
func (s *Server) ttl(seconds int64) time.Duration {
	maxTTL := s.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultTTL
	}
	def := s.DefaultTTL
	if def <= 0 {
		def = DefaultTTL
	}
	switch {
	case seconds <= 0:
		return min(def, maxTTL)
	case seconds > int64(math.MaxInt64/time.Second) || time.Duration(seconds)*time.Second > maxTTL:
		return maxTTL
	default:
		return time.Duration(seconds) * time.Second
	}
}

// refuse logs and counts a refusal and returns it as a gRPC status.
func (s *Server) refuse(caller *Caller, identity, reason string, code codes.Code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	if s.refused == nil {
		s.refused = make(map[string]uint64)
	}
	s.refused[reason]++
	s.mu.Unlock()
	attrs := []any{"reason", reason, "error", msg}
	if caller != nil {
		attrs = append(attrs, "caller", caller.String())
	}
	if identity != "" {
		attrs = append(attrs, "identity", identity)
	}
	s.log().Warn("refused certificate request", attrs...)
	return status.Error(code, msg)
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// bearerToken reads "authorization: Bearer <token>" from the request
// metadata. The scheme is case-insensitive (RFC 6750 via RFC 9110).
func bearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			if token = strings.TrimSpace(token); token != "" {
				return token, true
			}
		}
	}
	return "", false
}
