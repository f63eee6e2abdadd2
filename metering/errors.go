package metering

import (
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
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

// unavailable wraps a failure to reach Redis as ErrUnavailable: the
// network, a timeout, or a server that cannot serve now (loading, busy, a
// failover, a cluster resharding). An error Redis answered for the command
// itself (a script error, a wrong type) is not unavailability: retrying it
// would fail the same way, so it is wrapped as it is.
func unavailable(op string, err error) error {
	if refused(err) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}

// transientPrefixes are the error replies of a server that cannot serve
// now, but will.
var transientPrefixes = []string{"LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY",
	"MOVED", "ASK", "NOREPLICAS", "NOSCRIPT", "OOM"}

// refused reports whether err is Redis's answer refusing the command itself.
func refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) || errors.Is(err, redis.Nil) {
		return false
	}
	msg := re.Error()
	for _, p := range transientPrefixes {
		if strings.HasPrefix(msg, p) {
			return false
		}
	}
	return true
}
