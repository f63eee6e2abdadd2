package metering_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/testredis"
	"github.com/tollgate/tollgate/metering"
)

// TestDurability reads the settings of real redis-servers: one that evicts
// and persists nothing, one with AOF and noeviction.
func TestDurability(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		problems []string
	}{
		{"volatile", []string{"--maxmemory-policy", "allkeys-lru", "--appendonly", "no", "--save", ""}, []string{"maxmemory-policy is allkeys-lru", "persists nothing"}},
		{"durable", []string{"--maxmemory-policy", "noeviction", "--appendonly", "yes"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := testredis.Start(t, tc.args...)
			st := metering.New(rs.Client(t), metering.Options{})
			d, err := st.Durability(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := d.Problems()
			if len(got) != len(tc.problems) {
				t.Fatalf("%+v: problems %q, want %d", d, got, len(tc.problems))
			}
			for i, want := range tc.problems {
				if !strings.Contains(got[i], want) {
					t.Errorf("problem %q lacks %q", got[i], want)
				}
			}
		})
	}
}
