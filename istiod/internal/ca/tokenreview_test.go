package ca

import (
	"errors"
	"slices"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestTokenReviewer(t *testing.T) {
	podExtras := map[string]authnv1.ExtraValue{
		extraPodName:  {"ztunnel-abc"},
		extraPodUID:   {"uid-1"},
		extraNodeName: {"node-a"},
	}
	for _, tc := range []struct {
		name      string
		audiences []string // TokenReviewer.Audiences
		status    authnv1.TokenReviewStatus
		apiErr    error
		want      *Caller
		wantErr   error
	}{
		{
			name: "pod-bound token",
			status: authnv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{DefaultAudience},
				User: authnv1.UserInfo{Username: "system:serviceaccount:istio-system:ztunnel", Extra: podExtras},
			},
			want: &Caller{Namespace: "istio-system", ServiceAccount: "ztunnel", PodName: "ztunnel-abc", PodUID: "uid-1", NodeName: "node-a"},
		},
		{
			name:      "custom audience, no extras",
			audiences: []string{"other", "mesh-ca"},
			status: authnv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{"mesh-ca"},
				User: authnv1.UserInfo{Username: "system:serviceaccount:default:sleep"},
			},
			want: &Caller{Namespace: "default", ServiceAccount: "sleep"},
		},
		{
			name: "wrong audience",
			status: authnv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{"vault"},
				User: authnv1.UserInfo{Username: "system:serviceaccount:default:sleep"},
			},
			wantErr: ErrTokenRejected,
		},
		{
			name: "audience-unaware reviewer",
			status: authnv1.TokenReviewStatus{
				Authenticated: true,
				User:          authnv1.UserInfo{Username: "system:serviceaccount:default:sleep"},
			},
			wantErr: ErrTokenRejected,
		},
		{
			name:    "not authenticated",
			status:  authnv1.TokenReviewStatus{Error: "token has expired", Audiences: []string{DefaultAudience}},
			wantErr: ErrTokenRejected,
		},
		{
			name: "user, not a service account",
			status: authnv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{DefaultAudience},
				User: authnv1.UserInfo{Username: "system:node:node-a"},
			},
			wantErr: ErrTokenRejected,
		},
		{
			name: "service account without name",
			status: authnv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{DefaultAudience},
				User: authnv1.UserInfo{Username: "system:serviceaccount:default"},
			},
			wantErr: ErrTokenRejected,
		},
		{
			name: "service account with extra colon",
			status: authnv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{DefaultAudience},
				User: authnv1.UserInfo{Username: "system:serviceaccount:default:sleep:x"},
			},
			wantErr: ErrTokenRejected,
		},
		{
			name:    "API error",
			apiErr:  apierrors.NewForbidden(authnv1.Resource("tokenreviews"), "", errors.New("istiod lacks RBAC")),
			wantErr: ErrAuthUnavailable,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
				review := action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
				wantAuds := tc.audiences
				if wantAuds == nil {
					wantAuds = []string{DefaultAudience}
				}
				if review.Spec.Token != "the-token" || !slices.Equal(review.Spec.Audiences, wantAuds) {
					t.Errorf("review spec = %+v, want token the-token and audiences %v", review.Spec, wantAuds)
				}
				if tc.apiErr != nil {
					return true, nil, tc.apiErr
				}
				return true, &authnv1.TokenReview{Spec: review.Spec, Status: tc.status}, nil
			})
			r := &TokenReviewer{Client: client, Audiences: tc.audiences}
			got, err := r.Authenticate(t.Context(), "the-token")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				// The two failure classes never mix: retrying is right for one only.
				if errors.Is(err, ErrTokenRejected) && errors.Is(err, ErrAuthUnavailable) {
					t.Fatalf("error %v is both rejected and unavailable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != *tc.want {
				t.Fatalf("caller %+v, want %+v", got, tc.want)
			}
		})
	}
}
