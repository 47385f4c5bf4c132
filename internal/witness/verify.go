package witness

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// ClockSkew is how far in the future a cosignature's timestamp may be
// before it is refused: clocks differ, but a witness never signs ahead.
const ClockSkew = 5 * time.Minute

// Cosignature is a verified witness cosignature.
type Cosignature struct {
	// Witness is the policy's name for the witness.
	Witness string
	// Time is when the witness signed: it then knew no larger tree of
	// the log than the checkpoint's.
	Time time.Time
}

// Verified is a checkpoint signed by its log and cosigned by a quorum of a
// policy's witnesses.
type Verified struct {
	Checkpoint log.Checkpoint
	// Cosignatures holds one verified cosignature per witness that
	// signed, in the policy's order.
	Cosignatures []Cosignature
}

// Verify checks that signed is a C2SP checkpoint for origin ("" means the
// log key's name) signed by logKey and cosigned, under tlog-cosignature/v1,
// by at least p.Quorum() distinct witnesses of p, none timestamped more
// than ClockSkew after now. Signature lines of other keys are ignored; a
// line that names a known key but does not verify makes the whole note
// invalid. The error says which witnesses are missing.
func (p *Policy) Verify(signed []byte, origin string, logKey note.Verifier, now time.Time) (*Verified, error) {
	if origin == "" {
		origin = logKey.Name()
	}
	verifiers := []note.Verifier{logKey}
	for _, w := range p.witnesses {
		verifiers = append(verifiers, w.Key)
	}
	n, err := note.Open(signed, note.VerifierList(verifiers...))
	if err != nil {
		return nil, fmt.Errorf("witness: checkpoint: %w", DescribeOpenError(err))
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, fmt.Errorf("witness: checkpoint: %w", err)
	}
	if cp.Origin != origin {
		return nil, fmt.Errorf("witness: checkpoint is for log %q, not %q", cp.Origin, origin)
	}
	if !hasSig(n.Sigs, logKey) {
		return nil, fmt.Errorf("witness: checkpoint is not signed by the log key %s", logKey.Name())
	}
	v := &Verified{Checkpoint: cp}
	var missing, refused []string
	for _, w := range p.witnesses {
		c, err := cosignatureOf(n.Sigs, w, now)
		switch {
		case err != nil:
			refused = append(refused, fmt.Sprintf("%s: %v", w.Name, err))
		case c == nil:
			missing = append(missing, w.Name)
		default:
			v.Cosignatures = append(v.Cosignatures, *c)
		}
	}
	if len(v.Cosignatures) < p.quorum {
		return nil, fmt.Errorf("witness: checkpoint of size %d has %d of the %d witness cosignatures policy %s requires (missing: %s%s)",
			cp.Size, len(v.Cosignatures), p.quorum, p, strings.Join(missing, ", "), refusedSuffix(refused))
	}
	return v, nil
}

func refusedSuffix(refused []string) string {
	if len(refused) == 0 {
		return ""
	}
	return "; refused: " + strings.Join(refused, "; ")
}

// hasSig reports whether sigs holds a verified signature by v.
func hasSig(sigs []note.Signature, v note.Verifier) bool {
	for _, s := range sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			return true
		}
	}
	return false
}

// cosignatureOf returns w's cosignature among verified sigs (nil if none),
// refusing one timestamped more than ClockSkew after now.
func cosignatureOf(sigs []note.Signature, w Witness, now time.Time) (*Cosignature, error) {
	for _, s := range sigs {
		if s.Name != w.Key.Name() || s.Hash != w.Key.KeyHash() {
			continue
		}
		t, err := SignatureTime(s)
		if err != nil {
			return nil, err
		}
		if t.After(now.Add(ClockSkew)) {
			return nil, fmt.Errorf("cosignature is dated %s, more than %s after now (%s)",
				t.UTC().Format(time.RFC3339), ClockSkew, now.UTC().Format(time.RFC3339))
		}
		return &Cosignature{Witness: w.Name, Time: t}, nil
	}
	return nil, nil
}

// DescribeOpenError turns note.Open's errors into sentences.
func DescribeOpenError(err error) error {
	var inv *note.InvalidSignatureError
	var unv *note.UnverifiedNoteError
	switch {
	case errors.As(err, &inv):
		return fmt.Errorf("the signature of key %s+%08x does not verify over this checkpoint (a signature over another checkpoint, or a forged one): %w", inv.Name, inv.Hash, err)
	case errors.As(err, &unv):
		return fmt.Errorf("no signature from the log key or any policy witness: %w", err)
	}
	return fmt.Errorf("not a well-formed signed note: %w", err)
}
