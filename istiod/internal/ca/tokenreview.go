package ca

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultAudience is the audience of the projected tokens workloads present
// to the CA.
const DefaultAudience = "istio-ca"

// Extra keys the API server sets on the user of a pod-bound service account
// token.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

const serviceAccountPrefix = "system:serviceaccount:"

// TokenReviewer authenticates service account tokens with the Kubernetes
// TokenReview API, so revoked tokens and deleted pods are refused as the API
// server sees them.
type TokenReviewer struct {
	Client kubernetes.Interface
	// Audiences the token must be for; DefaultAudience when empty.
	Audiences []string
}

// Authenticate implements Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context, token string) (*Caller, error) {
	auds := r.Audiences
	if len(auds) == 0 {
		auds = []string{DefaultAudience}
	}
	review, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: auds},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: create tokenreview: %w", ErrAuthUnavailable, err)
	}
	st := review.Status
	if !st.Authenticated {
		if st.Error != "" {
			return nil, fmt.Errorf("%w: %s", ErrTokenRejected, st.Error)
		}
		return nil, fmt.Errorf("%w: not authenticated", ErrTokenRejected)
	}
	// An audience-unaware reviewer returns no audiences; the API asks us to
	// treat that as a failure rather than trust a token minted for another
	// service.
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(auds, a) }) {
		return nil, fmt.Errorf("%w: token audiences %v do not include %v", ErrTokenRejected, st.Audiences, auds)
	}
	rest, ok := strings.CutPrefix(st.User.Username, serviceAccountPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return nil, fmt.Errorf("%w: user %q is not a service account", ErrTokenRejected, st.User.Username)
	}
	return &Caller{
		Namespace:      ns,
		ServiceAccount: sa,
		PodName:        extra(st.User.Extra, extraPodName),
		PodUID:         extra(st.User.Extra, extraPodUID),
		NodeName:       extra(st.User.Extra, extraNodeName),
	}, nil
}

// extra returns a single-valued extra field; anything else is ignored as
// absent, since an ambiguous pod or node cannot vouch for anything.
func extra(m map[string]authnv1.ExtraValue, key string) string {
	if v := m[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}
