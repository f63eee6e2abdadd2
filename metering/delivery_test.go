package metering_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/metering"
)

// failOnce fails, once, the first round trip to Redis (a command or a
// pipeline) with an argument equal to arg: a connection lost mid-way.
type failOnce struct {
	arg  string
	done atomic.Bool
}

var errInjected = errors.New("injected: connection lost")

func (f *failOnce) fail(cmds ...redis.Cmder) bool {
	for _, c := range cmds {
		for _, a := range c.Args() {
			if fmt.Sprint(a) == f.arg && f.done.CompareAndSwap(false, true) {
				return true
			}
		}
	}
	return false
}

func (f *failOnce) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (f *failOnce) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.fail(cmd) {
			cmd.SetErr(errInjected)
			return errInjected
		}
		return next(ctx, cmd)
	}
}

func (f *failOnce) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.fail(cmds...) {
			for _, c := range cmds {
				c.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

// A delivery is created whole or not at all: whichever step of scheduling
// fails, the retry (the outbox is re-read) creates it with its body, due
// entry and TTL; and a record a crash left without a body is not a delivery.
func TestScheduleDeliveryWhole(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	for _, tc := range []struct {
		name    string
		failAt  string // the first round trip with this argument fails
		partial bool   // a record with only its event id is there before
	}{
		{name: "first step fails", failAt: "evt_1"},
		{name: "step writing the body fails", failAt: `{"id":"evt_1"}`},
		{name: "record without a body", partial: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, metering.Options{})
			rdb := e.srv.Client(t)
			rdb.AddHook(&failOnce{arg: tc.failAt})
			st := metering.New(rdb, metering.Options{})
			d := metering.Delivery{ID: "evt_1.ep", EventID: "evt_1", Type: "balance.low", Account: "a",
				Endpoint: "ep", URL: "http://127.0.0.1:1/hook", Body: `{"id":"evt_1"}`}
			if tc.partial {
				e.rdb.HSet(ctx, "{wh}:d:"+d.ID, "event", d.EventID)
			}
			created := 0
			for try := 0; ; try++ {
				ok, err := st.ScheduleDelivery(ctx, d, now)
				if ok {
					created++
				}
				if err == nil {
					break
				}
				if try == 3 {
					t.Fatalf("ScheduleDelivery: %v", err)
				}
			}
			if ok, err := st.ScheduleDelivery(ctx, d, now); ok || err != nil {
				t.Fatalf("ScheduleDelivery again = %v, %v; want an existing delivery", ok, err)
			}
			if created != 1 {
				t.Fatalf("created %d times, want once", created)
			}
			got, err := st.ClaimDeliveries(ctx, now, time.Minute, 10)
			if err != nil || len(got) != 1 || got[0].Body != d.Body || got[0].URL != d.URL {
				t.Fatalf("ClaimDeliveries = %+v, %v", got, err)
			}
			if ttl, err := e.rdb.TTL(ctx, "{wh}:d:"+d.ID).Result(); err != nil || ttl <= 0 {
				t.Fatalf("delivery TTL %v, %v", ttl, err)
			}
		})
	}
}
