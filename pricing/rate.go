package pricing

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
)

// rateScale is the number of rate units in one milli-credit per token: a
// Rate counts 10⁻⁹ mc per token (= 10⁻⁹ credits per 1K tokens). The unit is
// fine enough that every rate the catalog can state is an exact integer in
// it: a tier rate with up to nine decimals of credits per 1K tokens, and a
// provider's price of p micro-USD per 1M tokens at c credits per USD, which
// is exactly p × c units (p × 10⁻¹² USD a token × c credits × 1000 mc).
const rateScale = 1_000_000_000

// rateDecimals is how many decimals of credits per 1K a Rate keeps.
const rateDecimals = 9

// maxRate caps a rate: 10⁶ credits per 1K tokens (a tier), or 1000 USD per
// 1M tokens at 10⁹ credits per USD (a price book), whichever is larger.
// Sums of at most maxTokens tokens at it, over every kind, fit in 128 bits
// with room to spare; Cost saturates a total past the ledger's range.
const maxRate = 1_000_000_000_000_000_000 // 10¹⁸ units = 10⁹ credits per 1K

// maxTierRate caps a tier's or a model's stated rate (credits per 1K).
const maxTierRate = 1_000_000 * rateScale

// Rate is a price per token — or, for per-use fees, per use — in units of
// 10⁻⁹ milli-credits (10⁻⁹ credits per 1K tokens). It is written in
// configuration and shown by /v1/models as a decimal number of credits per
// 1K tokens ("8", "0.8", "0.375"); Cost sums a call's tokens at their rates
// exactly and rounds the total up to a whole milli-credit once.
//
// The zero Rate is free. Rate is a struct so that a bare number never
// passes for one: Per1K(8) is 8 credits per 1K tokens.
type Rate struct{ n uint64 }

// Per1K is a whole number of credits per 1K tokens (= mc per token); a
// negative n is free.
func Per1K(n int64) Rate {
	if n <= 0 {
		return Rate{}
	}
	return Rate{n: min(uint64(n), maxRate/rateScale) * rateScale}
}

// Ptr returns a pointer to a copy of r, for the optional rates of a Spec.
func (r Rate) Ptr() *Rate { return &r }

// ParseRate parses a decimal number of credits per 1K tokens with at most
// nine decimals ("8", "0.1", "3.75"). It never goes through a float.
func ParseRate(s string) (Rate, error) {
	v, err := parseDecimal(s, rateDecimals)
	if err != nil {
		return Rate{}, fmt.Errorf("rate %q: %w", s, err)
	}
	if v < 0 {
		return Rate{}, fmt.Errorf("rate %q is negative", s)
	}
	if uint64(v) > maxRate {
		return Rate{}, fmt.Errorf("rate %q is above 1e9 credits per 1K", s)
	}
	return Rate{n: uint64(v)}, nil
}

// MustRate is ParseRate for constants; it panics on a bad rate.
func MustRate(s string) Rate {
	r, err := ParseRate(s)
	if err != nil {
		panic(err)
	}
	return r
}

// UnmarshalText reads a rate from YAML or JSON text: an integer or a
// decimal (credits per 1K tokens), never through a float.
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalText writes the rate as ParseRate reads it.
func (r Rate) MarshalText() ([]byte, error) { return r.AppendDecimal(nil), nil }

// String is the rate in credits per 1K tokens, as a decimal.
func (r Rate) String() string { return string(r.AppendDecimal(nil)) }

// AppendDecimal appends the rate in credits per 1K tokens as a decimal with
// no trailing zeros ("8", "0.375"); it is a valid JSON number.
func (r Rate) AppendDecimal(dst []byte) []byte {
	dst = strconv.AppendUint(dst, r.n/rateScale, 10)
	frac := r.n % rateScale
	if frac == 0 {
		return dst
	}
	var d [rateDecimals]byte
	for i := rateDecimals - 1; i >= 0; i-- {
		d[i] = byte('0' + frac%10)
		frac /= 10
	}
	end := rateDecimals
	for d[end-1] == '0' {
		end--
	}
	dst = append(dst, '.')
	return append(dst, d[:end]...)
}

// IsZero reports whether the rate is free.
func (r Rate) IsZero() bool { return r.n == 0 }

// Whole reports whether the rate is a whole number of credits per 1K.
func (r Rate) Whole() bool { return r.n%rateScale == 0 }

// CeilMilli is the rate in whole milli-credits per token, rounded up: an
// upper bound for sizing holds (n tokens never cost more than n × CeilMilli).
func (r Rate) CeilMilli() int64 { return int64((r.n + rateScale - 1) / rateScale) }

// mulCeil is r × num / den, rounded up to a whole unit; ok is false past maxRate.
func (r Rate) mulCeil(num, den uint64) (Rate, bool) {
	hi, lo := bits.Mul64(r.n, num)
	if hi >= den {
		return Rate{}, false
	}
	q, rem := bits.Div64(hi, lo, den)
	if rem != 0 {
		q++
	}
	if q > maxRate {
		return Rate{}, false
	}
	return Rate{n: q}, true
}

// ceilWhole rounds r up to a whole number of credits per 1K.
func (r Rate) ceilWhole() Rate {
	return Rate{n: (r.n + rateScale - 1) / rateScale * rateScale}
}

func maxOf(rs ...Rate) Rate {
	var m Rate
	for _, r := range rs {
		if r.n > m.n {
			m = r
		}
	}
	return m
}

// errRateRange is a stated rate out of its range.
var errRateRange = errors.New("rate must be between 0 and 1e6 credits per 1K tokens")

// checkTierRate validates a stated tier or model rate.
func checkTierRate(r Rate) error {
	if r.n > maxTierRate {
		return fmt.Errorf("%w, got %s", errRateRange, r)
	}
	return nil
}
