package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Billing is the billing sidecar's metric families.
type Billing struct {
	webhooks *prometheus.CounterVec
}

// NewBilling registers the billing families.
func (r *Registry) NewBilling() *Billing {
	b := &Billing{webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_webhooks_total",
		Help: "Stripe webhook deliveries, by event type (the types Tollgate acts on; \"other\" for the rest, \"unknown\" before the signature is verified) and result.",
	}, []string{"type", "result"})}
	r.reg.MustRegister(b.webhooks)
	return b
}

// Webhook counts one delivery. billing bounds typ (billing.WebhookType).
func (b *Billing) Webhook(typ, result string) {
	b.webhooks.WithLabelValues(typ, result).Inc()
}

// Books is the durable books' families (billing with DATABASE_URL): the
// journal shipper's progress and the scheduled reconcile's verdict, so that
// an alert can fire on `time() - tollgate_journal_last_success_timestamp_seconds`
// or `tollgate_books_mismatches > 0`.
type Books struct {
	shipped    prometheus.Counter
	rounds     *prometheus.CounterVec
	lastOK     prometheus.Gauge
	mismatches prometheus.Gauge
	reconciled prometheus.Gauge
}

// NewBooks registers the books' families.
func (r *Registry) NewBooks() *Books {
	b := &Books{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_journal_shipped_entries_total",
			Help: "Ledger entries this process shipped to the journal in PostgreSQL.",
		}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_journal_ship_rounds_total",
			Help: "Rounds of the journal shipper, by result (ok, error: Redis or PostgreSQL away; the backlog ships when both answer).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_journal_last_success_timestamp_seconds",
			Help: "When the journal shipper last completed a round without error (Unix seconds).",
		}),
		mismatches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_books_mismatches",
			Help: "Mismatches the last scheduled reconcile found between Redis and the books (0: they agree).",
		}),
		reconciled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_books_last_reconcile_timestamp_seconds",
			Help: "When the last scheduled reconcile ran (Unix seconds).",
		}),
	}
	r.reg.MustRegister(b.shipped, b.rounds, b.lastOK, b.mismatches, b.reconciled)
	return b
}

// Shipped records one round of the shipper (books.ShipObserver).
func (b *Books) Shipped(entries int, err error) {
	b.shipped.Add(float64(entries)) // shipped, even when a later step of the round failed
	if err != nil {
		b.rounds.WithLabelValues("error").Inc()
		return
	}
	b.rounds.WithLabelValues("ok").Inc()
	b.lastOK.SetToCurrentTime()
}

// Reconciled records a scheduled reconcile's verdict.
func (b *Books) Reconciled(mismatches int) {
	b.mismatches.Set(float64(mismatches))
	b.reconciled.SetToCurrentTime()
}
