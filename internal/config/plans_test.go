package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/pricing"
)

func noEnv(string) (string, bool) { return "", false }

func TestShippedConfigsLoad(t *testing.T) {
	for _, path := range []string{"../../configs/tollgate.yaml", "../../configs/examples/eur-packs.yaml"} {
		t.Run(path, func(t *testing.T) {
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			if _, err := pricing.New(cfg.Pricing); err != nil {
				t.Fatalf("pricing.New: %v", err)
			}
			if len(cfg.Plans) == 0 {
				t.Fatal("no plans shipped")
			}
			for _, p := range cfg.Plans {
				if p.StripePriceID == "" || p.MinSeats < 1 || p.Name == "" {
					t.Fatalf("plan %+v", p)
				}
			}
			if cfg.Billing.AutoRecharge.DefaultSpendingLimit != "50.00" || cfg.Billing.AutoRecharge.MaxFailures != 3 {
				t.Fatalf("auto_recharge: %+v", cfg.Billing.AutoRecharge)
			}
		})
	}
}

func TestEURPacks(t *testing.T) {
	cfg, err := config.Load("../../configs/examples/eur-packs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pricing.New(cfg.Pricing)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		key     string
		credits int64 // whole credits
		cents   int64
	}{{"credits_1m", 1_000_000, 500}, {"credits_2_5m", 2_500_000, 1000}, {"credits_7m", 7_000_000, 2500}, {"credits_15m", 15_000_000, 5000}}
	packs := c.Packs()
	if len(packs) != len(want) {
		t.Fatalf("%d packs, want %d", len(packs), len(want))
	}
	for i, w := range want {
		p := packs[i]
		if p.Key != w.key || p.Credits != w.credits*pricing.MilliPerCredit || p.PriceMinor != w.cents || p.Currency != "eur" ||
			p.FeeBps != 0 || p.FeeMinor != 0 {
			t.Errorf("pack %d = %+v, want %s: %d credits for %d cents EUR, no fee", i, p, w.key, w.credits, w.cents)
		}
	}
}

func TestPlanValidation(t *testing.T) {
	base, err := readShipped()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, plans string
		errs        []string
	}{
		{"ok", `[{id: pro, stripe_price_id: price_1, limits: {requests: 5, per_seat: true}}]`, nil},
		{"missing id and price", `[{name: x}]`, []string{"plans[0].id: is required", "plans[0].stripe_price_id: is required"}},
		{"duplicates", `[{id: a, stripe_price_id: p}, {id: a, stripe_price_id: p}]`,
			[]string{`plans[1].id: duplicate plan "a"`, `plans[1].stripe_price_id: price "p" is already plan "a"'s`}},
		{"bad id", `[{id: "a b", stripe_price_id: p}]`, []string{"plans[0].id: must be"}},
		{"seats", `[{id: a, stripe_price_id: p, min_seats: 5, max_seats: 2}]`, []string{"plans[0].max_seats"}},
		{"negative limit", `[{id: a, stripe_price_id: p, limits: {requests_per_minute: -1}}]`, []string{"plans[0].limits.requests_per_minute"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := strings.Replace(base, "\nplans:\n", "\nplans: "+c.plans+"\nold_plans:\n", 1)
			data = data[:strings.Index(data, "\nold_plans:\n")] + data[strings.Index(data, "\nlog:"):]
			_, err := config.Parse([]byte(data), noEnv)
			if len(c.errs) == 0 {
				if err != nil {
					t.Fatalf("valid plans refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("invalid plans accepted")
			}
			for _, want := range c.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestPlanEffectiveLimits(t *testing.T) {
	p := config.Plan{ID: "team", MinSeats: 1, Limits: config.PlanLimits{Requests: 100, Credits: 5, APIKeys: 2, RequestsPerMinute: 10, PerSeat: true}}
	e := p.Effective(3)
	if e.Requests != 300 || e.Credits != 15 || e.APIKeys != 6 || e.RequestsPerMinute != 30 || e.InputTokens != 0 || e.PerSeat {
		t.Fatalf("per seat × 3: %+v", e)
	}
	if e := p.Effective(0); e.Requests != 100 {
		t.Fatalf("no seats counts as one: %+v", e)
	}
	p.Limits.PerSeat = false
	if e := p.Effective(3); e.Requests != 100 {
		t.Fatalf("not per seat: %+v", e)
	}
	if !p.Seats(1) || p.Seats(0) {
		t.Fatal("seats")
	}
	p.MaxSeats = 2
	if p.Seats(3) {
		t.Fatal("max seats")
	}
}

func readShipped() (string, error) {
	b, err := os.ReadFile("../../configs/tollgate.yaml")
	return string(b), err
}
