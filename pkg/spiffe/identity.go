package spiffe

import (
	"errors"
	"fmt"
	"strings"
)

// Scheme is the URI scheme of every SPIFFE ID.
const Scheme = "spiffe://"

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid SPIFFE identity")

// Identity is a workload identity in the mesh.
type Identity struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String formats the identity as its SPIFFE URI.
func (id Identity) String() string {
	return Scheme + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// IsZero reports whether id is the zero Identity.
func (id Identity) IsZero() bool { return id == Identity{} }

// Parse reads spiffe://<td>/ns/<ns>/sa/<sa>. It is strict: any other path,
// an empty segment, a query, a fragment or a port is an error, because an
// identity that two parsers could read differently is an authorization bug.
func Parse(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q: not a spiffe:// URI", ErrInvalid, s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return Identity{}, fmt.Errorf("%w: %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", ErrInvalid, s)
	}
	id := Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}
	if err := validTrustDomain(id.TrustDomain); err != nil {
		return Identity{}, fmt.Errorf("%w: %q: %v", ErrInvalid, s, err)
	}
	for _, seg := range []string{id.Namespace, id.ServiceAccount} {
		if err := validSegment(seg); err != nil {
			return Identity{}, fmt.Errorf("%w: %q: %v", ErrInvalid, s, err)
		}
	}
	return id, nil
}

// validTrustDomain allows what the SPIFFE spec allows in a trust domain
// name: lowercase letters, digits, dots, dashes and underscores.
func validTrustDomain(td string) error {
	if td == "" {
		return errors.New("empty trust domain")
	}
	for _, r := range td {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return fmt.Errorf("trust domain has %q", r)
		}
	}
	return nil
}

// validSegment allows the path characters the SPIFFE spec allows, and
// rejects "." and "..".
func validSegment(seg string) error {
	if seg == "" || seg == "." || seg == ".." {
		return fmt.Errorf("bad path segment %q", seg)
	}
	for _, r := range seg {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return fmt.Errorf("path segment %q has %q", seg, r)
		}
	}
	return nil
}
