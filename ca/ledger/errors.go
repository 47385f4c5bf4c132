package ledger

import "errors"

// ErrAlreadyRevoked: Revoke of a serial that is already revoked.
var ErrAlreadyRevoked = errors.New("ledger: certificate already revoked")
