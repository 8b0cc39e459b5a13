package policycontroller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	clientsecurityv1 "istio.io/client-go/pkg/apis/security/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ambient-mesh/mesh/istiod/internal/ads"
	"github.com/ambient-mesh/mesh/istiod/internal/policy"
)

// rebuild translates every resource, updates the cache, tells the listener
// what changed for workloads, and brings status conditions up to date.
// Cache and listener come first: a status write that fails is retried and
// never holds back enforcement.
func (c *Controller) rebuild(ctx context.Context) error {
	var aps []*clientsecurityv1.AuthorizationPolicy
	var pas []*clientsecurityv1.PeerAuthentication
	if c.factory != nil {
		var err error
		if aps, err = c.authz.List(labels.Everything()); err != nil {
			return err
		}
		if pas, err = c.peerAuth.List(labels.Everything()); err != nil {
			return err
		}
	}
	root := *c.root.Load()
	in := make([]policy.AuthorizationPolicy, 0, len(aps))
	for _, ap := range aps {
		in = append(in, policy.AuthorizationPolicy{Name: ap.Name, Namespace: ap.Namespace, Annotations: ap.Annotations, Spec: &ap.Spec})
	}
	pin := make([]policy.PeerAuthentication, 0, len(pas))
	for _, pa := range pas {
		pin = append(pin, policy.PeerAuthentication{Name: pa.Name, Namespace: pa.Namespace, Created: pa.CreationTimestamp.Time, Spec: &pa.Spec})
	}
	next := policy.Build(root, in, pin)

	updated := make(map[string]*anypb.Any, len(next.Resources))
	for name, a := range next.Resources {
		body, err := ads.MarshalAny(a)
		if err != nil {
			return fmt.Errorf("marshal %s: %w", name, err)
		}
		updated[name] = body
	}
	var removed []string
	for name := range c.owned {
		if _, ok := updated[name]; !ok {
			removed = append(removed, name)
		}
	}
	c.cache.Apply(AuthorizationType, updated, removed)
	c.owned = make(map[string]bool, len(updated))
	for name := range updated {
		c.owned[name] = true
	}
	prev := c.set.Swap(next)
	c.built.Store(true)
	if all, namespaces := policy.Changed(prev, next); all || len(namespaces) > 0 {
		c.listenMu.Lock()
		l := c.listener
		c.listenMu.Unlock()
		if l != nil {
			l(all, namespaces)
		}
	}

	var errs []error
	for _, ap := range aps {
		ref := policy.Ref{Kind: policy.KindAuthorizationPolicy, Namespace: ap.Namespace, Name: ap.Name}
		r := next.Reports[ref]
		c.logReport(ref, r)
		waypoint := ap.Spec.GetTargetRef() != nil || len(ap.Spec.GetTargetRefs()) > 0
		want := authorizationCondition(r, ap.Spec.GetAction().String(), waypoint)
		if cp := ap.DeepCopy(); setCondition(&cp.Status, want, ap.Generation) {
			_, err := c.client.SecurityV1().AuthorizationPolicies(ap.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			errs = append(errs, statusErr(ref, err))
		}
	}
	for _, pa := range pas {
		ref := policy.Ref{Kind: policy.KindPeerAuthentication, Namespace: pa.Namespace, Name: pa.Name}
		r := next.Reports[ref]
		c.logReport(ref, r)
		want := peerAuthenticationCondition(r)
		if cp := pa.DeepCopy(); setCondition(&cp.Status, want, pa.Generation) {
			_, err := c.client.SecurityV1().PeerAuthentications(pa.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
			errs = append(errs, statusErr(ref, err))
		}
	}
	return errors.Join(errs...)
}

func statusErr(ref policy.Ref, err error) error {
	if err == nil || apierrors.IsNotFound(err) {
		return nil // gone since it was listed: nothing to report on
	}
	return fmt.Errorf("status of %s: %w", ref, err)
}

// logReport logs, once per distinct report, what a resource's translation
// did not carry over, naming the resource and the fields.
func (c *Controller) logReport(ref policy.Ref, r policy.Report) {
	summary := r.Summary()
	c.reportMu.Lock()
	prev, seen := c.reported[ref]
	c.reported[ref] = summary
	c.reportMu.Unlock()
	if (seen && prev == summary) || (len(r.Invalid) == 0 && len(r.Ignored) == 0) {
		return
	}
	c.log.Warn("policy not fully enforced by ztunnel", "kind", string(ref.Kind), "namespace", ref.Namespace, "name", ref.Name, "problems", summary)
}

// authorizationCondition is the ZtunnelAccepted condition an
// AuthorizationPolicy should carry, or nil when ztunnel is not its
// enforcer (a waypoint is: targetRefs).
func authorizationCondition(r policy.Report, action string, waypoint bool) *metav1alpha1.IstioCondition {
	switch {
	case waypoint:
		return nil
	case r.Skipped != "":
		return &metav1alpha1.IstioCondition{Type: ConditionType, Status: "False", Reason: ReasonUnsupportedValue,
			Message: "ztunnel does not enforce this policy: " + r.Skipped}
	case len(r.Invalid) > 0 || len(r.Ignored) > 0:
		msg := problems(r) + "."
		if inRules(r) {
			consequence := "Within an ALLOW policy, the rules holding them are left out and match nothing. This is more restrictive than requested."
			if action == "DENY" {
				consequence = "The DENY rules holding them apply without those fields. This is more restrictive than intended."
			}
			msg += " " + consequence
		}
		if r.DryRun {
			msg += " The policy is in dry-run: ztunnel evaluates it so and logs the outcome, but enforces none of it."
		}
		return &metav1alpha1.IstioCondition{Type: ConditionType, Status: "True", Reason: ReasonUnsupportedValue, Message: msg}
	case r.DryRun:
		return &metav1alpha1.IstioCondition{Type: ConditionType, Status: "True", Reason: ReasonAccepted,
			Message: "attached to ztunnel in dry-run: evaluated and logged, not enforced"}
	default:
		return &metav1alpha1.IstioCondition{Type: ConditionType, Status: "True", Reason: ReasonAccepted, Message: "attached to ztunnel"}
	}
}

// inRules reports whether any of a report's problems is inside the rules.
func inRules(r policy.Report) bool {
	for _, i := range slices.Concat(r.Ignored, r.Invalid) {
		if strings.HasPrefix(i.Path, "rules") {
			return true
		}
	}
	return false
}

// peerAuthenticationCondition is the ZtunnelAccepted condition a
// PeerAuthentication should carry.
func peerAuthenticationCondition(r policy.Report) *metav1alpha1.IstioCondition {
	if len(r.Invalid) > 0 || len(r.Ignored) > 0 {
		return &metav1alpha1.IstioCondition{Type: ConditionType, Status: "True", Reason: ReasonUnsupportedValue,
			Message: problems(r) + ". The rest of the resource is enforced."}
	}
	return &metav1alpha1.IstioCondition{Type: ConditionType, Status: "True", Reason: ReasonAccepted, Message: "attached to ztunnel"}
}

// problems lists a report's fields: "ztunnel does not support HTTP
// attributes (found: rules[0].to[0].operation.methods)", invalid values
// with their reason.
func problems(r policy.Report) string {
	var parts []string
	if len(r.Ignored) > 0 {
		var paths []string
		for _, i := range r.Ignored {
			paths = append(paths, i.String())
		}
		parts = append(parts, "ztunnel cannot enforce "+strings.Join(paths, ", "))
	}
	for _, i := range r.Invalid {
		parts = append(parts, "invalid value at "+i.String())
	}
	return strings.Join(parts, "; ")
}

// setCondition replaces the controller's condition in status by want
// (removes it when want is nil) and reports whether that changed anything.
// Conditions of other owners are kept; the transition time moves only
// when the condition's status, reason or message does.
func setCondition(status *metav1alpha1.IstioStatus, want *metav1alpha1.IstioCondition, generation int64) bool {
	i := slices.IndexFunc(status.Conditions, func(c *metav1alpha1.IstioCondition) bool { return c.GetType() == ConditionType })
	if want == nil {
		if i < 0 {
			return false
		}
		status.Conditions = slices.Delete(status.Conditions, i, i+1)
		return true
	}
	want.ObservedGeneration = generation
	if i < 0 {
		want.LastTransitionTime = timestamppb.Now()
		status.Conditions = append(status.Conditions, want)
		return true
	}
	have := status.Conditions[i]
	same := have.GetStatus() == want.Status && have.GetReason() == want.Reason && have.GetMessage() == want.Message
	if same && have.GetObservedGeneration() == generation {
		return false
	}
	want.LastTransitionTime = have.GetLastTransitionTime()
	if !same {
		want.LastTransitionTime = timestamppb.Now()
	}
	status.Conditions[i] = want
	return true
}
