package metering

import (
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is.
var (
	ErrNoAccount     = errors.New("metering: no such account")
	ErrAccountExists = errors.New("metering: account already exists")
	ErrInsufficient  = errors.New("metering: insufficient credits")
	ErrBadKey        = errors.New("metering: invalid API key")
	ErrNoKey         = errors.New("metering: no such key")
	ErrNotFound      = errors.New("metering: not found")
	// ErrUnavailable wraps every failure to reach Redis, so that callers can
	// refuse work (503) rather than proceed without a hold.
	ErrUnavailable = errors.New("metering: store unavailable")
)

// InsufficientError says what a call needed and what was available. It
// matches ErrInsufficient with errors.Is.
type InsufficientError struct {
	Needed    int64 // milli-credits needed for the smallest acceptable call
	Available int64 // milli-credits available (balance − holds, or the key's remaining limit)
	KeyLimit  bool  // the key's credit limit, not the balance, was the constraint
}

func (e *InsufficientError) Error() string {
	what := "balance"
	if e.KeyLimit {
		what = "key credit limit"
	}
	return fmt.Sprintf("metering: insufficient credits: need %d mc, %s allows %d mc", e.Needed, what, e.Available)
}

// Is makes errors.Is(err, ErrInsufficient) true.
func (e *InsufficientError) Is(target error) bool { return target == ErrInsufficient }

func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}
