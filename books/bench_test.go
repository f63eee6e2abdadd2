package books

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/metering"
)

// BenchmarkShip measures the shipper's throughput: 50 accounts × 400 ledger
// entries in Redis, shipped into an empty journal per iteration (read from
// Redis, COPY, insert, usage_daily, cursors). Reports entries/s.
func BenchmarkShip(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	const accounts, per = 50, 400
	var wg sync.WaitGroup
	for a := range accounts {
		id := fmt.Sprintf("bench-%d", a)
		if _, err := e.St.CreateAccount(ctx, id); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := e.St.Credit(ctx, metering.Credit{Account: id, Amount: int64(1000 + i), Reference: fmt.Sprint(i),
					Fields: map[string]string{"model": "m", "input_tokens": "10"}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	sh := e.b.NewShipper(e.St, ShipperOptions{})
	b.ReportAllocs()
	b.ResetTimer()
	var total int
	for range b.N {
		b.StopTimer()
		if _, err := e.b.pool.Exec(ctx, `TRUNCATE journal, ship_cursor, usage_daily`); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n, err := sh.Sweep(ctx)
		if err != nil || n != accounts*per {
			b.Fatalf("Sweep = %d, %v", n, err)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "entries/s")
}
