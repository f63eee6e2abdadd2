package webhooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
)

// Queue is what the Dispatcher needs of the store (*metering.Store).
type Queue interface {
	TakeEventMarks(ctx context.Context, n int) ([]string, error)
	MoveEvents(ctx context.Context, account string) (int, error)
	ScanOutboxes(ctx context.Context, fn func(accounts []string) error) error
	EnsureEventGroup(ctx context.Context, group string) error
	ReadEvents(ctx context.Context, group, consumer string, count int64, block time.Duration) ([]metering.Event, error)
	ClaimEvents(ctx context.Context, group, consumer string, minIdle time.Duration, count int64) ([]metering.Event, error)
	PendingEvents(ctx context.Context, group, consumer string, count int64) ([]metering.Event, error)
	AckEvent(ctx context.Context, group, queueID string) error
	ScheduleDelivery(ctx context.Context, d metering.Delivery, now time.Time) (bool, error)
	ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, n int) ([]metering.Delivery, error)
	RecordAttempt(ctx context.Context, id, state string, code int, errText string, next, now time.Time) error
}

var _ Queue = (*metering.Store)(nil)

// Group is the webhook queue's consumer group.
const Group = "webhooks"

// Options configure a Dispatcher. Zero values mean the documented defaults.
type Options struct {
	Queue     Queue            // required
	Endpoints []config.Webhook // the operator's endpoints
	Logger    *zap.Logger      // default: none
	// Client sends deliveries. Default: 10 s timeout, no redirects followed.
	Client *http.Client
	// Consumer names this process in the consumer group. Default the
	// hostname: a process restarted on the same host takes up at once what
	// it had read and not acknowledged (two processes sharing a name is
	// safe: a delivery is created once, by id).
	Consumer string
	// Poll is how often due deliveries and outbox marks are looked at. Default 200ms.
	Poll time.Duration
	// FirstRetry is the delay before the first retry (default 10s; within
	// 30 s), doubled after each failure up to MaxDelay (default 2h).
	FirstRetry, MaxDelay time.Duration
	// MaxAge is how long a delivery is retried (default 24h): past it, failed.
	MaxAge time.Duration
	// ClaimIdle is how long an event read by a consumer that never
	// acknowledged it (a process that died) waits before another takes it.
	// Default 30s.
	ClaimIdle time.Duration
	// Sweep is how often every outbox is looked at (the backstop for lost
	// marks). Default 1m.
	Sweep time.Duration
}

func (o *Options) init() {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Consumer == "" {
		o.Consumer, _ = os.Hostname()
		if o.Consumer == "" {
			o.Consumer = "billing"
		}
	}
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.FirstRetry <= 0 {
		o.FirstRetry = 10 * time.Second
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 2 * time.Hour
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.ClaimIdle <= 0 {
		o.ClaimIdle = 30 * time.Second
	}
	if o.Sweep <= 0 {
		o.Sweep = time.Minute
	}
}

// Dispatcher moves, schedules and delivers events. Run it once per billing
// process; several processes share the work safely.
type Dispatcher struct {
	opts      Options
	q         Queue
	log       *zap.Logger
	endpoints []endpoint
}

type endpoint struct {
	id     string
	url    string
	secret string
	events []string // empty: all
}

// EndpointID names an endpoint by its URL.
func EndpointID(url string) string {
	h := sha256.Sum256([]byte(url))
	return hex.EncodeToString(h[:8])
}

// New builds a Dispatcher.
func New(o Options) *Dispatcher {
	o.init()
	d := &Dispatcher{opts: o, q: o.Queue, log: o.Logger.Named("webhooks")}
	for _, w := range o.Endpoints {
		d.endpoints = append(d.endpoints, endpoint{id: EndpointID(w.URL), url: w.URL, secret: w.Secret, events: w.Events})
	}
	return d
}

// Run works until ctx ends. Without endpoints it still drains the outboxes
// (events then have no delivery).
func (d *Dispatcher) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := d.q.EnsureEventGroup(ctx, Group); err == nil {
			break
		} else {
			d.log.Warn("creating the webhook consumer group", zap.Error(err))
		}
		sleep(ctx, time.Second)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.pumpLoop(ctx) }()
	go func() { defer wg.Done(); d.eventLoop(ctx) }()
	go func() { defer wg.Done(); d.deliverLoop(ctx) }()
	wg.Wait()
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// pumpLoop moves outbox entries of marked accounts to the queue, and sweeps
// every outbox now and then.
func (d *Dispatcher) pumpLoop(ctx context.Context) {
	var lastSweep time.Time
	for ctx.Err() == nil {
		if time.Since(lastSweep) >= d.opts.Sweep {
			err := d.q.ScanOutboxes(ctx, func(accts []string) error {
				for _, a := range accts {
					if _, err := d.q.MoveEvents(ctx, a); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil && ctx.Err() == nil {
				d.log.Warn("sweeping outboxes", zap.Error(err))
			} else {
				lastSweep = time.Now()
			}
		}
		accts, err := d.q.TakeEventMarks(ctx, 100)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("taking event marks", zap.Error(err))
		}
		for _, a := range accts {
			if _, err := d.q.MoveEvents(ctx, a); err != nil && ctx.Err() == nil {
				d.log.Warn("moving events", zap.String("account", a), zap.Error(err))
			}
		}
		if len(accts) < 100 {
			sleep(ctx, d.opts.Poll)
		}
	}
}

// eventLoop schedules the deliveries of each queued event, then
// acknowledges it; events a dead consumer left are claimed after ClaimIdle.
func (d *Dispatcher) eventLoop(ctx context.Context) {
	var lastClaim time.Time
	pending := true // first what this consumer read before a restart and never acknowledged
	for ctx.Err() == nil {
		var evs []metering.Event
		var err error
		if pending {
			evs, err = d.q.PendingEvents(ctx, Group, d.opts.Consumer, 100)
			pending = err != nil || len(evs) == 100
		} else if time.Since(lastClaim) >= d.opts.ClaimIdle/2 {
			evs, err = d.q.ClaimEvents(ctx, Group, d.opts.Consumer, d.opts.ClaimIdle, 100)
			lastClaim = time.Now()
		}
		if err == nil && len(evs) == 0 {
			evs, err = d.q.ReadEvents(ctx, Group, d.opts.Consumer, 100, d.opts.Poll)
		}
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("reading events", zap.Error(err))
				sleep(ctx, time.Second)
			}
			continue
		}
		for _, ev := range evs {
			// An event read is scheduled even while shutting down (a read
			// may complete after ctx ends): bounded, not cancelled.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := d.schedule(sctx, ev)
			cancel()
			if err != nil {
				d.log.Warn("scheduling deliveries", zap.String("event", ev.ID), zap.Error(err))
				break // left pending: read again at start, or claimed by another consumer
			}
		}
	}
}

func (d *Dispatcher) schedule(ctx context.Context, ev metering.Event) error {
	body, err := Body(ev)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, ep := range d.endpoints {
		if len(ep.events) > 0 && !slices.Contains(ep.events, ev.Type) {
			continue
		}
		_, err := d.q.ScheduleDelivery(ctx, metering.Delivery{ID: ev.ID + "." + ep.id, EventID: ev.ID, Type: ev.Type,
			Account: ev.Account, Endpoint: ep.id, URL: ep.url, Body: string(body)}, now)
		if err != nil {
			return err
		}
	}
	return d.q.AckEvent(ctx, Group, ev.QueueID)
}

// Body is the JSON an event is delivered as: {"id","type","created"
// (unix seconds),"account","data"}. In data a field stored as <name>_mc is
// <name> in credits (a number with three decimals), "true"/"false" are
// booleans, everything else a string.
func Body(ev metering.Event) ([]byte, error) {
	data := make(map[string]json.RawMessage, len(ev.Data))
	for k, v := range ev.Data {
		switch {
		case strings.HasSuffix(k, "_mc"):
			mc, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("event %s: field %s = %q", ev.ID, k, v)
			}
			data[strings.TrimSuffix(k, "_mc")] = pricing.AppendCredits(nil, mc)
		case v == "true" || v == "false":
			data[k] = json.RawMessage(v)
		default:
			b, _ := json.Marshal(v)
			data[k] = b
		}
	}
	return json.Marshal(struct {
		ID      string                     `json:"id"`
		Type    string                     `json:"type"`
		Created int64                      `json:"created"`
		Account string                     `json:"account"`
		Data    map[string]json.RawMessage `json:"data"`
	}{ev.ID, ev.Type, ev.Created.Unix(), ev.Account, data})
}

// deliverLoop sends due deliveries (a few at once) and records each attempt.
func (d *Dispatcher) deliverLoop(ctx context.Context) {
	lease := d.opts.Client.Timeout + 30*time.Second
	if d.opts.Client.Timeout <= 0 {
		lease = 2 * time.Minute
	}
	for ctx.Err() == nil {
		ds, err := d.q.ClaimDeliveries(ctx, time.Now(), lease, 32)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("claiming deliveries", zap.Error(err))
			}
			sleep(ctx, time.Second)
			continue
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, dl := range ds {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				d.attempt(ctx, dl)
			}()
		}
		wg.Wait()
		if len(ds) < 32 {
			sleep(ctx, d.opts.Poll)
		}
	}
}

// Delay is the wait after the n-th failed attempt (n ≥ 1): FirstRetry ×
// 2^(n−1), at most MaxDelay.
func (d *Dispatcher) Delay(n int) time.Duration {
	w := d.opts.FirstRetry
	for i := 1; i < n && w < d.opts.MaxDelay; i++ {
		w *= 2
	}
	return min(w, d.opts.MaxDelay)
}

func (d *Dispatcher) attempt(ctx context.Context, dl metering.Delivery) {
	var ep *endpoint
	for i := range d.endpoints {
		if d.endpoints[i].id == dl.Endpoint {
			ep = &d.endpoints[i]
		}
	}
	now := time.Now()
	if ep == nil {
		d.record(ctx, dl, metering.DeliveryFailed, 0, "endpoint no longer configured", now)
		return
	}
	code, err := d.send(ctx, ep, dl)
	if ctx.Err() != nil {
		return // shutting down: the claim lapses and the delivery is taken again
	}
	now = time.Now()
	if err == nil {
		d.record(ctx, dl, metering.DeliveryDelivered, code, "", now)
		return
	}
	next := now.Add(d.Delay(dl.Attempts + 1))
	state := metering.DeliveryPending
	if next.Sub(dl.CreatedAt) > d.opts.MaxAge {
		state = metering.DeliveryFailed
	}
	d.log.Info("webhook delivery failed", zap.String("delivery", dl.ID), zap.String("url", ep.url),
		zap.Int("attempt", dl.Attempts+1), zap.Int("status", code), zap.Error(err))
	d.recordNext(ctx, dl, state, code, err.Error(), next, now)
}

func (d *Dispatcher) record(ctx context.Context, dl metering.Delivery, state string, code int, errText string, now time.Time) {
	d.recordNext(ctx, dl, state, code, errText, now, now)
}

func (d *Dispatcher) recordNext(ctx context.Context, dl metering.Delivery, state string, code int, errText string, next, now time.Time) {
	if err := d.q.RecordAttempt(ctx, dl.ID, state, code, errText, next, now); err != nil && ctx.Err() == nil {
		// Not recorded: the claim lapses and the delivery is sent again (at least once).
		d.log.Warn("recording a delivery attempt", zap.String("delivery", dl.ID), zap.Error(err))
	}
}

func (d *Dispatcher) send(ctx context.Context, ep *endpoint, dl metering.Delivery) (int, error) {
	body := []byte(dl.Body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Tollgate-Webhooks/1")
	req.Header.Set(SignatureHeader, Sign(ep.secret, time.Now(), body))
	req.Header.Set("Tollgate-Event-Id", dl.EventID)
	req.Header.Set("Tollgate-Delivery-Id", dl.ID)
	res, err := d.opts.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("sending: %w", err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return res.StatusCode, fmt.Errorf("endpoint answered %d", res.StatusCode)
	}
	return res.StatusCode, nil
}
