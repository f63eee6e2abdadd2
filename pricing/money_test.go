package pricing_test

import (
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pricing"
)

// creditsString renders mc independently of the package: sign, whole
// credits, a dot and exactly three decimals.
func creditsString(mc int64) string {
	v := big.NewInt(mc)
	sign := ""
	if v.Sign() < 0 {
		sign = "-"
		v.Neg(v)
	}
	q, r := new(big.Int).QuoRem(v, big.NewInt(1000), new(big.Int))
	frac := r.String()
	return sign + q.String() + "." + strings.Repeat("0", 3-len(frac)) + frac
}

func TestFormatCredits(t *testing.T) {
	tests := []struct {
		mc   int64
		want string
	}{
		{0, "0.000"},
		{1, "0.001"},
		{-5, "-0.005"},
		{10, "0.010"},
		{999, "0.999"},
		{1000, "1.000"},
		{-1000, "-1.000"},
		{12345, "12.345"},
		{-12345, "-12.345"},
		{2_374_050_000, "2374050.000"},
		{math.MaxInt64, "9223372036854775.807"},
		{math.MinInt64, "-9223372036854775.808"},
	}
	for _, tt := range tests {
		if got := pricing.FormatCredits(tt.mc); got != tt.want {
			t.Errorf("FormatCredits(%d) = %q, want %q", tt.mc, got, tt.want)
		}
		if got := creditsString(tt.mc); got != tt.want {
			t.Fatalf("test oracle: creditsString(%d) = %q, want %q", tt.mc, got, tt.want)
		}
		prefix := []byte("balance=")
		if got := string(pricing.AppendCredits(prefix, tt.mc)); got != "balance="+tt.want {
			t.Errorf("AppendCredits(%q, %d) = %q", prefix, tt.mc, got)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		mc := int64(r.Uint64())
		if r.IntN(2) == 0 {
			mc >>= r.IntN(63) // small magnitudes too
		}
		if got, want := pricing.FormatCredits(mc), creditsString(mc); got != want {
			t.Fatalf("FormatCredits(%d) = %q, want %q", mc, got, want)
		}
	}
}

func TestAppendCreditsDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 32)
	allocs := testing.AllocsPerRun(100, func() {
		buf = pricing.AppendCredits(buf[:0], -123456789)
	})
	if allocs != 0 {
		t.Errorf("AppendCredits allocates %.1f times per call", allocs)
	}
}

func TestParseCredits(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0.000", 0},
		{"-0", 0},
		{"1", 1000},
		{"1000", 1_000_000},
		{"12.5", 12_500},
		{"12.345", 12_345},
		{"0.001", 1},
		{"-0.005", -5},
		{"+2.5", 2_500},
		{"007", 7_000},
		{"2374050", 2_374_050_000},
		{"4611686018427387.903", 1<<62 - 1},
	}
	for _, tt := range tests {
		got, err := pricing.ParseCredits(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseCredits(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseCreditsErrors(t *testing.T) {
	for _, in := range []string{
		"", " ", "1.2345", "abc", "1e5", "1E5", "--1", "-+1", "+-1", "-", "+", ".", "1.", "1..2", "1.2.3",
		"1,5", "0x10", "1_000", "NaN", "Inf", "-Inf", "1 000", "1-", "½", "١", "１",
		"9223372036854775807", "9223372036854775.808", "-9223372036854775.809", "99999999999999999999999",
		"1\x00", "\x00",
	} {
		v, err := pricing.ParseCredits(in)
		if err == nil {
			t.Errorf("ParseCredits(%q) = %d, want an error", in, v)
			continue
		}
		if v != 0 {
			t.Errorf("ParseCredits(%q) returned %d with its error", in, v)
		}
		if !strings.HasPrefix(err.Error(), "pricing: ") {
			t.Errorf("ParseCredits(%q) error %q lacks the package prefix", in, err)
		}
	}
}

func TestCreditsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vals := []int64{0, 1, -1, 999, -999, 1000, 1001, 1 << 62, -(1 << 62)}
	for range 10000 {
		v := int64(r.Uint64() >> 2) // |v| < 2^62
		if r.IntN(2) == 0 {
			v = -v
		}
		vals = append(vals, v>>r.IntN(62))
	}
	for _, v := range vals {
		s := pricing.FormatCredits(v)
		got, err := pricing.ParseCredits(s)
		if err != nil || got != v {
			t.Fatalf("ParseCredits(FormatCredits(%d) = %q) = %d, %v", v, s, got, err)
		}
	}
}

func TestParseMinor(t *testing.T) {
	tests := []struct {
		in       string
		decimals int
		want     int64
	}{
		{"24.99", 2, 2499},
		{"9.99", 2, 999},
		{"199.99", 2, 19999},
		{"5", 2, 500},
		{"5.00", 2, 500},
		{"0.5", 2, 50},
		{"0.05", 2, 5},
		{"-1.50", 2, -150},
		{"100", 0, 100},
		{"1.234", 3, 1234},
		{"0.000001", 6, 1},
	}
	for _, tt := range tests {
		got, err := pricing.ParseMinor(tt.in, tt.decimals)
		if err != nil || got != tt.want {
			t.Errorf("ParseMinor(%q, %d) = %d, %v; want %d", tt.in, tt.decimals, got, err, tt.want)
		}
	}
	for _, bad := range []struct {
		in       string
		decimals int
	}{
		{"24.999", 2}, {"1.5", 0}, {"", 2}, {"abc", 2}, {"1e2", 2}, {"--1", 2}, {"$5", 2}, {"5 USD", 2},
	} {
		if v, err := pricing.ParseMinor(bad.in, bad.decimals); err == nil {
			t.Errorf("ParseMinor(%q, %d) = %d, want an error", bad.in, bad.decimals, v)
		}
	}
}

func TestFormatMinor(t *testing.T) {
	tests := []struct {
		minor    int64
		decimals int
		want     string
	}{
		{2499, 2, "24.99"},
		{500, 2, "5.00"},
		{5, 2, "0.05"},
		{50, 2, "0.50"},
		{0, 2, "0.00"},
		{-5, 2, "-0.05"},
		{-150, 2, "-1.50"},
		{100, 0, "100"},
		{-100, 0, "-100"},
		{7, 3, "0.007"},
		{1, 6, "0.000001"},
		{math.MaxInt64, 2, "92233720368547758.07"},
		{math.MinInt64, 2, "-92233720368547758.08"},
	}
	for _, tt := range tests {
		if got := pricing.FormatMinor(tt.minor, tt.decimals); got != tt.want {
			t.Errorf("FormatMinor(%d, %d) = %q, want %q", tt.minor, tt.decimals, got, tt.want)
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 5000 {
		v := int64(r.Uint64()>>2) >> r.IntN(62)
		if r.IntN(2) == 0 {
			v = -v
		}
		for _, d := range []int{0, 2, 3} {
			s := pricing.FormatMinor(v, d)
			got, err := pricing.ParseMinor(s, d)
			if err != nil || got != v {
				t.Fatalf("ParseMinor(FormatMinor(%d, %d) = %q) = %d, %v", v, d, s, got, err)
			}
		}
	}
}

// FuzzParseCredits: no input panics; whatever parses is an exact decimal with
// at most three places, and formats back to a string that parses to the same
// value.
func FuzzParseCredits(f *testing.F) {
	for _, s := range []string{"0", "12.345", "-0.005", "+1", "1.2345", "abc", "", "1e5", "--1", "4611686018427387.904"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := pricing.ParseCredits(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("ParseCredits(%q) = %d with error %v", s, v, err)
			}
			return
		}
		// Oracle: the exact rational value of the input, times 1000.
		r, ok := new(big.Rat).SetString(strings.TrimSpace(s))
		if !ok {
			t.Fatalf("ParseCredits(%q) = %d, but it is not a number", s, v)
		}
		r.Mul(r, big.NewRat(1000, 1))
		if !r.IsInt() || !r.Num().IsInt64() || r.Num().Int64() != v {
			t.Fatalf("ParseCredits(%q) = %d, exact value is %s mc", s, v, r.RatString())
		}
		f := pricing.FormatCredits(v)
		back, err := pricing.ParseCredits(f)
		if err != nil || back != v {
			t.Fatalf("ParseCredits(FormatCredits(%d) = %q) = %d, %v", v, f, back, err)
		}
	})
}
