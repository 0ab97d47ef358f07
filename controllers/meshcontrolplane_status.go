package controllers

import (
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// computeStatus is a pure function of the previous status and what the
// phases observed. Conditions keep their lastTransitionTime while their
// status does not change (meta.SetStatusCondition).
func computeStatus(mesh *meshv1alpha1.MeshControlPlane, obs *observation, now time.Time) meshv1alpha1.MeshControlPlaneStatus {
	st := *mesh.Status.DeepCopy()
	gen := mesh.Generation
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: s, Reason: reason, Message: truncate(msg), ObservedGeneration: gen,
			LastTransitionTime: metav1.NewTime(now),
		})
	}

	if obs.conflictWith != "" {
		msg := fmt.Sprintf("MeshControlPlane %q already manages this cluster and only one is supported; this one does nothing until it is the oldest left", obs.conflictWith)
		set(meshv1alpha1.ConditionReady, false, meshv1alpha1.ReasonConflict, msg)
		set(meshv1alpha1.ConditionDegraded, true, meshv1alpha1.ReasonConflict, msg)
		set(meshv1alpha1.ConditionProgressing, false, meshv1alpha1.ReasonConflict, msg)
		set(meshv1alpha1.ConditionUpgradeInProgress, false, meshv1alpha1.ReasonNoUpgrade, "no upgrade: this mesh is inactive")
		st.Version.Desired = mesh.Spec.Version
		st.ObservedGeneration = gen
		return st
	}

	st.Version.Desired = mesh.Spec.Version
	st.Revisions = nil
	for _, rev := range obs.revisions {
		st.Revisions = append(st.Revisions, meshv1alpha1.RevisionStatus{
			Name: rev.Name, Version: rev.Version, Ready: rev.Available, Proxies: obs.proxies.ByRevision[rev.Name],
		})
	}
	if obs.versionErr == nil {
		if obs.proxiesObserved {
			uninjected := obs.uninjected
			if uninjected < 0 {
				uninjected = st.Proxies.Uninjected
			}
			st.Proxies = proxiesStatus(obs.proxies, uninjected)
		}
		st.Certificates = certificatesStatus(obs.certs, st.Certificates)
		st.Upgrade = obs.upgrade
	}

	activeRev, activeOK := obs.revision(obs.active)
	upgrading := obs.upgrade != nil && obs.upgrade.Phase != phaseComplete

	// Ready.
	switch {
	case obs.versionErr != nil:
		set(meshv1alpha1.ConditionReady, false, meshv1alpha1.ReasonUnknownVersion, obs.versionErr.Error())
	case obs.applyErr != nil:
		set(meshv1alpha1.ConditionReady, false, meshv1alpha1.ReasonApplyFailed, obs.applyErr.Error())
	case !obs.certs.Ready:
		set(meshv1alpha1.ConditionReady, false, meshv1alpha1.ReasonIssuerNotReady, orDefault(obs.certs.Message, "the issuer certificate is not ready"))
	case !activeOK || !activeRev.Available:
		set(meshv1alpha1.ConditionReady, false, meshv1alpha1.ReasonControlPlaneNotReady,
			fmt.Sprintf("Deployment %s/%s is not available yet", meshNamespace(mesh), RevisionObjectName(orDefault(obs.active, obs.desired.Revision))))
	default:
		set(meshv1alpha1.ConditionReady, true, meshv1alpha1.ReasonInstalled,
			fmt.Sprintf("control-plane revision %s (%s) serves the mesh and injects new pods", activeRev.Name, activeRev.Version))
	}

	// Degraded.
	switch {
	case obs.versionErr != nil:
		set(meshv1alpha1.ConditionDegraded, true, meshv1alpha1.ReasonUnknownVersion, obs.versionErr.Error())
	case obs.applyErr != nil:
		set(meshv1alpha1.ConditionDegraded, true, meshv1alpha1.ReasonApplyFailed, obs.applyErr.Error())
	case !obs.certs.Ready:
		set(meshv1alpha1.ConditionDegraded, true, meshv1alpha1.ReasonIssuerNotReady, orDefault(obs.certs.Message, "the issuer certificate is not ready"))
	case obs.batchFailed:
		set(meshv1alpha1.ConditionDegraded, true, meshv1alpha1.ReasonBatchFailed, obs.upgradeMessage)
	case obs.certs.Expiring != "":
		set(meshv1alpha1.ConditionDegraded, true, meshv1alpha1.ReasonCertificateExpiring, obs.certs.Expiring)
	default:
		set(meshv1alpha1.ConditionDegraded, false, meshv1alpha1.ReasonAsExpected, "nothing needs attention")
	}

	// UpgradeInProgress and Progressing.
	upReason, upMsg := upgradeReason(obs)
	switch {
	case obs.versionErr != nil:
		// Nothing changes while the version is unknown.
		set(meshv1alpha1.ConditionProgressing, false, meshv1alpha1.ReasonUnknownVersion, obs.versionErr.Error())
	case upgrading:
		set(meshv1alpha1.ConditionProgressing, upReason != meshv1alpha1.ReasonUpgradePaused && upReason != meshv1alpha1.ReasonBatchFailed, upReason, upMsg)
	case obs.applyErr != nil || !obs.certs.Ready || !activeOK || !activeRev.Available:
		set(meshv1alpha1.ConditionProgressing, true, meshv1alpha1.ReasonInstalling, "installing the control plane")
	case obs.certs.RotatingAnchors:
		set(meshv1alpha1.ConditionProgressing, true, meshv1alpha1.ReasonRotatingTrustAnchor, "the trust bundle holds the old and the new trust anchor until the old one expires")
	default:
		set(meshv1alpha1.ConditionProgressing, false, meshv1alpha1.ReasonAsExpected, "the mesh runs the desired version and configuration")
	}
	switch {
	case upgrading:
		set(meshv1alpha1.ConditionUpgradeInProgress, true, upReason, upMsg)
	case obs.upgrade != nil:
		set(meshv1alpha1.ConditionUpgradeInProgress, false, meshv1alpha1.ReasonUpgradeComplete,
			fmt.Sprintf("upgrade from %s to %s complete", obs.upgrade.From, obs.upgrade.To))
	case obs.versionErr == nil:
		set(meshv1alpha1.ConditionUpgradeInProgress, false, meshv1alpha1.ReasonNoUpgrade, "no upgrade in progress")
	}

	// current is the version that all of the mesh runs: one revision, ready,
	// and no proxy reporting another version.
	st.Version.Current = ""
	if len(obs.revisions) == 1 && obs.revisions[0].Available && !upgrading {
		v := obs.revisions[0].Version
		others := false
		for pv, n := range obs.proxies.ByVersion {
			if pv != v && n > 0 {
				others = true
			}
		}
		if !others {
			st.Version.Current = v
		}
	}
	if obs.reconciled {
		st.ObservedGeneration = gen
	}
	return st
}

func upgradeReason(obs *observation) (string, string) {
	if obs.upgrade == nil {
		return meshv1alpha1.ReasonNoUpgrade, ""
	}
	msg := fmt.Sprintf("upgrade from %s to %s: %s", obs.upgrade.From, obs.upgrade.To, orDefault(obs.upgradeMessage, string(obs.upgrade.Phase)))
	switch obs.upgrade.Phase {
	case phaseStarting:
		return meshv1alpha1.ReasonRevisionStarting, msg
	case phaseRestarting:
		return meshv1alpha1.ReasonRestartingWorkloads, msg
	case phasePaused:
		if obs.batchFailed {
			return meshv1alpha1.ReasonBatchFailed, msg
		}
		return meshv1alpha1.ReasonUpgradePaused, msg
	case phaseRemoving:
		return meshv1alpha1.ReasonRemovingOldRevision, msg
	}
	return meshv1alpha1.ReasonUpgradeStarted, msg
}

func proxiesStatus(p proxyReport, uninjected int32) meshv1alpha1.ProxiesStatus {
	out := meshv1alpha1.ProxiesStatus{Total: p.Connected, Stale: p.Stale, Uninjected: uninjected}
	for v, n := range p.ByVersion {
		out.ByVersion = append(out.ByVersion, meshv1alpha1.VersionCount{Version: v, Count: n})
	}
	slices.SortFunc(out.ByVersion, func(a, b meshv1alpha1.VersionCount) int { return compareStrings(a.Version, b.Version) })
	return out
}

// certificatesStatus keeps the last known expiries when this reconcile did
// not get as far as reading a certificate.
func certificatesStatus(c certObservation, prev meshv1alpha1.CertificatesStatus) meshv1alpha1.CertificatesStatus {
	out := prev
	t := func(v time.Time, old *metav1.Time) *metav1.Time {
		if v.IsZero() {
			return old
		}
		return &metav1.Time{Time: v.UTC().Truncate(time.Second)}
	}
	out.TrustAnchorExpiry = t(c.AnchorExpiry, prev.TrustAnchorExpiry)
	out.IssuerExpiry = t(c.IssuerExpiry, prev.IssuerExpiry)
	out.WebhookExpiry = t(c.WebhookExpiry, prev.WebhookExpiry)
	if c.Anchors > 0 {
		out.TrustAnchors = int32(c.Anchors)
	}
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// truncate keeps a message within the API's 32768-byte limit.
func truncate(s string) string {
	const max = 4096
	if len(s) > max {
		return s[:max-3] + "..."
	}
	return s
}

func equalStatus(a, b meshv1alpha1.MeshControlPlaneStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
