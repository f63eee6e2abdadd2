package pricing

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// MilliPerCredit is the number of ledger units (milli-credits) in one credit.
const MilliPerCredit = 1000

// maxTokens bounds any token count the package prices, so that every product
// below fits in an int64 with room to spare.
const maxTokens = 1 << 40

// FormatCredits renders milli-credits as a decimal credit string with exactly
// three decimals: 12345 → "12.345", -5 → "-0.005".
func FormatCredits(mc int64) string {
	var buf [24]byte
	return string(AppendCredits(buf[:0], mc))
}

// AppendCredits appends FormatCredits(mc) to dst without allocating.
func AppendCredits(dst []byte, mc int64) []byte {
	u := uint64(mc)
	if mc < 0 {
		dst = append(dst, '-')
		u = uint64(-mc)
	}
	dst = strconv.AppendUint(dst, u/MilliPerCredit, 10)
	frac := u % MilliPerCredit
	return append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// ParseCredits parses a decimal credit amount with at most three decimals
// ("12.5", "1000", "-0.005") into milli-credits. It never goes through a float.
func ParseCredits(s string) (int64, error) {
	v, err := parseDecimal(s, 3)
	if err != nil {
		return 0, fmt.Errorf("pricing: credits %q: %w", s, err)
	}
	return v, nil
}

// ParseMinor parses a decimal money amount ("24.99") into minor units given the
// currency's number of decimals (2 for USD and EUR).
func ParseMinor(s string, decimals int) (int64, error) {
	v, err := parseDecimal(s, decimals)
	if err != nil {
		return 0, fmt.Errorf("pricing: amount %q: %w", s, err)
	}
	return v, nil
}

// FormatMinor renders minor units with the given number of decimals: 2499 → "24.99".
func FormatMinor(minor int64, decimals int) string {
	neg := minor < 0
	u := uint64(minor)
	if neg {
		u = -u // also right for math.MinInt64
	}
	s := strconv.FormatUint(u, 10)
	if decimals > 0 {
		if len(s) <= decimals {
			s = strings.Repeat("0", decimals-len(s)+1) + s
		}
		s = s[:len(s)-decimals] + "." + s[len(s)-decimals:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

var errDecimal = errors.New("not a decimal number")

// parseDecimal parses an optionally signed decimal with at most scale
// fractional digits into an integer scaled by 10^scale.
func parseDecimal(s string, scale int) (int64, error) {
	s = strings.TrimSpace(s)
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	intPart, frac, hasDot := strings.Cut(s, ".")
	if intPart == "" && frac == "" || hasDot && frac == "" {
		return 0, errDecimal
	}
	if len(frac) > scale {
		return 0, fmt.Errorf("more than %d decimals", scale)
	}
	var v uint64
	digits := 0
	for _, part := range []string{intPart, frac + strings.Repeat("0", scale-len(frac))} {
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c < '0' || c > '9' {
				return 0, errDecimal
			}
			digits++
			hi, lo := bits.Mul64(v, 10)
			lo, carry := bits.Add64(lo, uint64(c-'0'), 0)
			if hi != 0 || carry != 0 || lo > 1<<62 {
				return 0, errors.New("out of range")
			}
			v = lo
		}
	}
	if digits == 0 {
		return 0, errDecimal
	}
	if neg {
		return -int64(v), nil
	}
	return int64(v), nil
}

// mulDivFloor returns floor(a×b/d) computed in 128 bits; ok is false when the
// result does not fit an int64.
func mulDivFloor(a, b, d uint64) (int64, bool) {
	hi, lo := bits.Mul64(a, b)
	if hi >= d {
		return 0, false
	}
	q, _ := bits.Div64(hi, lo, d)
	if q > 1<<62 {
		return 0, false
	}
	return int64(q), true
}

// maxCost is what Cost returns when the exact price does not fit the ledger.
const maxCost = 1 << 62
