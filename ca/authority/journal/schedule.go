package journal

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/castellan-dev/castellan/ca/authority/leaf"
)

// DefaultPrepareAt is the fraction of the active authority's lifetime after
// which the next authority is prepared.
const DefaultPrepareAt = 0.5

// publishMargin is added to the max SVID TTL to make the default publish
// delay: the time a connected agent needs to receive a bundle push and hand
// it to its workloads (seconds), the kubelet's refresh of a bundle
// ConfigMap (about a minute) and clock skew between nodes.
const publishMargin = 5 * time.Minute

// DefaultPublishDelay is the publish delay when Config.PublishDelay is 0:
// maxTTL plus five minutes.
//
// A new root must reach every workload that may meet a leaf signed under it.
// Connected agents receive a bundle change within seconds (the CA pushes it
// on their sync stream), so the delay is set by the agents that are cut off
// from the CA: such an agent keeps serving its workloads valid SVIDs, and
// the bundle it had, for as long as those SVIDs live, at most the max SVID
// TTL. Waiting maxTTL (plus the margin) means that every workload still
// able to do mTLS has either received the new root or has no valid SVID
// left anyway. The delay only holds back authorities under a root that is
// not yet published, i.e. root rotations, which the policy prepares months
// ahead (when the root has less than an intermediate lifetime left); an
// intermediate rotation under the same root is activated at once.
func DefaultPublishDelay(maxTTL time.Duration) time.Duration { return maxTTL + publishMargin }

// followMargin bounds how long a replica may keep signing with an authority
// after another replica deactivated it (the shared store signals within a
// second and resyncs every few seconds); it extends the life of the last
// leaf an authority may have signed.
const followMargin = time.Minute

// schedule is the self-managed rotation policy: when to prepare, activate
// and retire authorities. It only decides; ca/authority/rotation acts.
type Schedule struct {
	PrepareAt       float64
	PublishDelay    time.Duration
	IntermediateTTL time.Duration
	MaxTTL          time.Duration
}

// stepKind is what the schedule asks for.
type StepKind int

const (
	StepPrepare  StepKind = iota + 1 // prepare the next managed authority
	StepActivate                     // activate a prepared authority
	StepRetire                       // revoke an old or tainted authority with no live leaf
)

// step is one action the schedule asks for.
type Step struct {
	Kind    StepKind
	ID      string // activate, retire
	NewRoot bool   // prepare: under a new root
	Reason  string
}

// Plan returns the steps due at now. published says when a root entered the
// bundle; canSign whether this replica holds an authority's key.
func (s Schedule) Plan(recs []*Record, now time.Time, published func(*x509.Certificate) (time.Time, bool), canSign func(*Record) bool) []Step {
	var steps []Step
	active, prepared := FindState(recs, StateActive), FindState(recs, StatePrepared)
	if active != nil && active.Source == SourceManaged && prepared == nil && !now.Before(s.prepareTime(active)) {
		root := active.RootCerts[0]
		steps = append(steps, Step{Kind: StepPrepare, NewRoot: s.needsNewRoot(root, now),
			Reason: "rotation: the active authority is past " + Percent(s.PrepareAt) + " of its lifetime"})
	}
	if prepared != nil && canSign(prepared) && prepared.Certs[0].NotAfter.After(now) {
		if at, ok := s.activatableAt(prepared, published); ok && !now.Before(at) {
			steps = append(steps, Step{Kind: StepActivate, ID: prepared.ID,
				Reason: "rotation: its root has been published for the publish delay"})
		}
	}
	for _, r := range recs {
		if r.State != StateOld && r.State != StateTainted {
			continue
		}
		if end := LeavesExpireBy(r, s.MaxTTL); !now.Before(end) {
			steps = append(steps, Step{Kind: StepRetire, ID: r.ID,
				Reason: "retired: the last leaf it may have signed expired at " + end.UTC().Format(time.RFC3339)})
		}
	}
	return steps
}

// prepareTime is when the successor of the active authority r is due.
func (s Schedule) prepareTime(r *Record) time.Time {
	c := r.Certs[0]
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(time.Duration(float64(life) * s.PrepareAt))
}

// needsNewRoot reports whether a new intermediate under root would be cut
// short: the root has less than an intermediate lifetime left.
func (s Schedule) needsNewRoot(root *x509.Certificate, now time.Time) bool {
	return root.NotAfter.Sub(now) < s.IntermediateTTL
}

// activatableAt is when r's root will have been published for the delay;
// false if the root is not in the bundle.
func (s Schedule) activatableAt(r *Record, published func(*x509.Certificate) (time.Time, bool)) (time.Time, bool) {
	at, ok := published(r.RootCerts[0])
	if !ok {
		return time.Time{}, false
	}
	return at.Add(s.PublishDelay), true
}

// leavesExpireBy bounds the NotAfter of every leaf r may have signed: zero
// if it never signed; its certificate's NotAfter while it is active;
// otherwise the time it was deactivated plus the longest SVID lifetime
// (the larger of the one recorded when it signed and maxTTL) plus
// followMargin, never past its certificate's NotAfter.
func LeavesExpireBy(r *Record, maxTTL time.Duration) time.Time {
	notAfter := r.Certs[0].NotAfter
	switch {
	case r.ActivatedAt.IsZero():
		return time.Time{}
	case r.State == StateActive || r.DeactivatedAt.IsZero():
		return notAfter
	}
	ttl := max(time.Duration(r.MaxTTL), maxTTL)
	end := r.DeactivatedAt.Add(ttl + leaf.Backdate + followMargin)
	if end.After(notAfter) {
		return notAfter
	}
	return end
}

func FindState(recs []*Record, s State) *Record {
	for _, r := range recs {
		if r.State == s {
			return r
		}
	}
	return nil
}

func Percent(f float64) string { return fmt.Sprintf("%.0f%%", f*100) }
