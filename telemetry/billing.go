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
