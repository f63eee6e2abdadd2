package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The shipped catalog prices its tiers far below the providers' list prices
// at its credits_per_usd; a serving process says so at start, naming each
// model and the kinds it loses on. (Should the tiers ever cover their
// books, this test fails and the warning should go.)
func TestWarnBelowCostShippedCatalog(t *testing.T) {
	l, err := load("../../configs/tollgate.yaml", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	warnBelowCost(zap.New(core), l.catalog, time.Now())
	es := logs.FilterMessageSnippet("below their providers' list prices").All()
	if len(es) != 1 {
		t.Fatalf("%d warnings, want 1: %v", len(es), logs.All())
	}
	below, _ := es[0].ContextMap()["below_cost"].([]any)
	joined := strings.Join(func() []string {
		var s []string
		for _, b := range below {
			s = append(s, b.(string))
		}
		return s
	}(), "\n")
	for _, want := range []string{"claude-sonnet: input 8<300", "gpt-4o-mini: input 1<15"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warning lacks %q:\n%s", want, joined)
		}
	}
}
