package identity

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TokenReviewer authenticates tokens with the API server's TokenReview, which
// checks the signature, expiry, audience and that the ServiceAccount (and the
// pod a token is bound to) still exist.
type TokenReviewer struct {
	Client kubernetes.Interface
}

const saPrefix = "system:serviceaccount:"

// Authenticate returns the ServiceAccount a token proves.
func (r TokenReviewer) Authenticate(ctx context.Context, token string) (ServiceAccount, error) {
	tr, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("TokenReview: %w", err)
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return ServiceAccount{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	if !slices.Contains(st.Audiences, Audience) {
		return ServiceAccount{}, fmt.Errorf("%w: the token's audiences %v do not include %q", ErrUnauthenticated, st.Audiences, Audience)
	}
	rest, ok := strings.CutPrefix(st.User.Username, saPrefix)
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || name == "" {
		return ServiceAccount{}, fmt.Errorf("%w: %q is not a ServiceAccount", ErrUnauthenticated, st.User.Username)
	}
	return ServiceAccount{Namespace: ns, Name: name}, nil
}
