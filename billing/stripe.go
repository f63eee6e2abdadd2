package billing

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tollgate/tollgate/internal/config"
)

// stripeTimeout bounds one Stripe HTTP call (the library retries network
// failures twice, with the same idempotency key).
const stripeTimeout = 30 * time.Second

// NewStripeClient builds a Stripe client from configuration: its own backends
// (APIBase, e.g. a stripe-mock, replaces every Stripe host when set), its own
// key, logging through logger. It never touches stripe-go's globals. It
// returns nil and no error when no secret key is configured.
func NewStripeClient(cfg config.Stripe, logger *zap.Logger) (*client.API, error) {
	if cfg.SecretKey == "" {
		return nil, nil
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	var base *string
	if cfg.APIBase != "" {
		u, err := url.Parse(cfg.APIBase)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("billing.stripe.api_base: must be an http(s) URL, got %q", cfg.APIBase)
		}
		base = stripe.String(cfg.APIBase)
	}
	httpClient := &http.Client{Timeout: stripeTimeout}
	log := stripeLogger{logger.Named("stripe")}
	backend := func(t stripe.SupportedBackend) stripe.Backend {
		return stripe.GetBackendWithConfig(t, &stripe.BackendConfig{
			HTTPClient: httpClient, LeveledLogger: log, MaxNetworkRetries: stripe.Int64(2), URL: base,
			EnableTelemetry: stripe.Bool(false),
		})
	}
	return client.New(cfg.SecretKey, &stripe.Backends{
		API:     backend(stripe.APIBackend),
		Connect: backend(stripe.ConnectBackend),
		Uploads: backend(stripe.UploadsBackend),
	}), nil
}

// stripeLogger adapts zap to stripe-go's leveled logger. The library logs
// every request at info: that is debug here. Its errors are returned to us
// and logged with the request; here they are warnings.
type stripeLogger struct{ l *zap.Logger }

func (s stripeLogger) Debugf(format string, v ...any) { s.at(zap.DebugLevel, format, v) }
func (s stripeLogger) Infof(format string, v ...any)  { s.at(zap.DebugLevel, format, v) }
func (s stripeLogger) Warnf(format string, v ...any)  { s.at(zap.WarnLevel, format, v) }
func (s stripeLogger) Errorf(format string, v ...any) { s.at(zap.WarnLevel, format, v) }

func (s stripeLogger) at(level zapcore.Level, format string, v []any) {
	if ce := s.l.Check(level, ""); ce != nil {
		ce.Message = fmt.Sprintf(format, v...)
		ce.Write()
	}
}
