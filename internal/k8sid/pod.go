package k8sid

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Claim is what a request says of the pod it speaks for.
type Claim struct {
	Node    string         // the node asking (authenticated)
	UID     string         // the pod's UID
	Account ServiceAccount // the identity asked for
}

// Problem says which part of a Claim a pod does not bear out.
type Problem int

// The problems CheckPod reports, in the order it checks them.
const (
	OtherNode    Problem = iota + 1 // the pod runs on another node
	Terminated                      // the pod is being deleted or has terminated
	OtherAccount                    // the pod runs as another service account
	OtherUID                        // the pod has another UID
)

// PodError is a refusal of CheckPod.
type PodError struct {
	Problem Problem
	msg     string
}

func (e *PodError) Error() string { return e.msg }

// CheckPod returns nil if pod bears out claim: it runs on claim.Node, is
// live, runs as claim.Account and has claim.UID. Otherwise it returns a
// *PodError naming the first thing that is wrong.
func CheckPod(pod *corev1.Pod, claim Claim) error {
	where := fmt.Sprintf("pod %s/%s (uid %s)", pod.Namespace, pod.Name, pod.UID)
	refuse := func(p Problem, format string, args ...any) error {
		return &PodError{Problem: p, msg: where + " " + fmt.Sprintf(format, args...)}
	}
	switch acct := OfPod(pod); {
	case pod.Spec.NodeName != claim.Node:
		return refuse(OtherNode, "runs on node %q, not on the caller's node %q", pod.Spec.NodeName, claim.Node)
	case !Live(pod) && pod.DeletionTimestamp != nil:
		return refuse(Terminated, "is being deleted")
	case !Live(pod):
		return refuse(Terminated, "has terminated (phase %s)", pod.Status.Phase)
	case acct != claim.Account:
		return refuse(OtherAccount, "runs as service account %s, not %s", acct, claim.Account)
	case string(pod.UID) != claim.UID:
		return refuse(OtherUID, "is not the pod with uid %s", claim.UID)
	}
	return nil
}
