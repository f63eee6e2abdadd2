package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// demoCredits is what the dev demo account starts with.
const demoCredits = 1000

// runDev starts proxy and billing in one process, with an embedded Redis when
// REDIS_URL is unset and the mock provider for every provider without a key.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr)
	var f commonFlags
	f.register(fs, "proxy listen address")
	billingAddr := fs.String("billing-addr", "", "billing listen address (overrides the config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := load(f.config, stderr)
	if err != nil {
		return err
	}
	defer l.log.Sync() //nolint:errcheck
	cfg := l.cfg
	if f.addr != "" {
		cfg.Proxy.Addr = f.addr
	}
	if *billingAddr != "" {
		cfg.Billing.Addr = *billingAddr
	}
	setMetricsAddr(cfg, "dev", f.metrics)

	embedded := cfg.Redis.URL == "" && len(cfg.Redis.Addrs) == 0
	if embedded {
		mr, err := miniredis.Run()
		if err != nil {
			return fmt.Errorf("starting embedded redis: %w", err)
		}
		defer mr.Close()
		cfg.Redis.URL = "redis://" + mr.Addr() + "/0"
		fmt.Fprintln(stderr, strings.Repeat("!", 78))
		fmt.Fprintln(stderr, "!! REDIS_URL is not set: using an EMBEDDED IN-MEMORY Redis.")
		fmt.Fprintln(stderr, "!! Balances, keys and the ledger are LOST when this process stops.")
		fmt.Fprintln(stderr, "!! Set REDIS_URL=redis://host:6379/0 to keep them.")
		fmt.Fprintln(stderr, strings.Repeat("!", 78))
	}

	var (
		mocked   []string
		mockURL  string
		mockStop func() error
	)
	for name, p := range cfg.Providers {
		if p.APIKey != "" {
			continue
		}
		if mockURL == "" {
			mock, base, err := mockllm.Start(mockllm.Config{})
			if err != nil {
				return fmt.Errorf("starting mock provider: %w", err)
			}
			mockURL, mockStop = base, mock.Close
			defer mockStop() //nolint:errcheck
		}
		p.BaseURL, p.NativeBaseURL = mockURL, mockURL
		cfg.Providers[name] = p
		mocked = append(mocked, name)
	}
	if len(mocked) > 0 {
		fmt.Fprintf(stderr, "mock provider (deterministic fake answers) serves: %s — set their *_API_KEY for real ones\n", strings.Join(mocked, ", "))
	}

	if cfg.Billing.AdminToken == "" {
		cfg.Billing.AdminToken = "dev-" + randomHex(24)
	}
	if cfg.Billing.JWT.Secret == "" && cfg.Billing.JWT.PublicKeyFile == "" {
		cfg.Billing.JWT.Secret = "dev-" + randomHex(32)
	}
	userToken, err := devToken(cfg.Billing.JWT.Secret, cfg.Billing.JWT.AccountClaim, cfg.Billing.JWT.Issuer, cfg.Billing.JWT.Audience)
	if err != nil {
		return err
	}

	store, err := newStore(cfg)
	if err != nil {
		return err
	}
	key, err := seedDemo(ctx, store)
	if err != nil {
		return err
	}

	// One /metrics for both: the proxy's families and billing's.
	m, err := startMetrics(l, cfg.Metrics.Addr, store, stdout)
	if err != nil {
		return err
	}
	defer m.Close()
	popts, stopMeter := proxyOptions(l, store)
	m.instrumentProxy(l, &popts)
	psrv, err := proxy.New(popts)
	if err != nil {
		return err
	}
	pln, err := net.Listen("tcp", cfg.Proxy.Addr)
	if err != nil {
		return listenError("proxy", cfg.Proxy.Addr, err, "--addr", "ADDR")
	}
	bsrv, _, err := newBillingServer(l, store, m)
	if err != nil {
		pln.Close()
		return err
	}
	bln, err := net.Listen("tcp", cfg.Billing.Addr)
	if err != nil {
		pln.Close()
		return listenError("billing", cfg.Billing.Addr, err, "--billing-addr", "BILLING_ADDR")
	}
	printBanner(stdout, "http://"+pln.Addr().String(), "http://"+bln.Addr().String(), key, cfg.Billing.AdminToken, userToken, embedded)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			l.log.Warn("SIGHUP: tollgate dev does not reload its configuration (it rewrites providers and Redis); restart it, or run proxy and billing")
		}
	}()
	errc := make(chan error, 2)
	go func() { errc <- serveHTTP(ctx, l, bsrv, bln) }()
	go func() { errc <- serveUntil(ctx, l, psrv, pln, stopMeter) }()
	err = <-errc
	if err != nil {
		l.log.Error("server stopped", zap.Error(err))
		return err
	}
	return <-errc
}

// seedDemo makes the demo account with its credits (once) and a fresh key.
func seedDemo(ctx context.Context, st *metering.Store) (string, error) {
	if _, err := st.EnsureAccount(ctx, "demo"); err != nil {
		return "", err
	}
	if _, err := st.Credit(ctx, metering.Credit{
		Account: "demo", Amount: demoCredits * pricing.MilliPerCredit, Reference: "dev:demo-grant", Type: "grant",
		Fields: map[string]string{"description": "tollgate dev demo credits"},
	}); err != nil {
		return "", err
	}
	_, secret, err := st.CreateKey(ctx, "demo", "dev", 0)
	return secret, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// devToken signs a day-long HS256 JWT for the demo account, for trying the
// billing API. Only dev mints tokens: in production the app's backend does.
func devToken(secret, claim, iss, aud string) (string, error) {
	if secret == "" {
		return "", nil
	}
	claims := jwt.MapClaims{claim: "demo", "exp": time.Now().Add(24 * time.Hour).Unix(), "iat": time.Now().Unix()}
	if iss != "" {
		claims["iss"] = iss
	}
	if aud != "" {
		claims["aud"] = aud
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

func printBanner(w io.Writer, proxyURL, billingURL, key, adminToken, userToken string, embedded bool) {
	store := "Redis at REDIS_URL"
	if embedded {
		store = "embedded in-memory Redis (nothing survives a restart)"
	}
	fmt.Fprintf(w, `
Tollgate dev is running.
  proxy    %[1]s/v1   (OpenAI-compatible)
  billing  %[2]s
  store    %[5]s
  account  demo, %[6]d credits
  API key  %[3]s
  admin    Authorization: Bearer %[4]s
  user JWT %[7]s
           (the demo account's token for the billing API, valid 24h)

Try it:

curl -i %[1]s/v1/chat/completions -H "Authorization: Bearer %[3]s" -H "Content-Type: application/json" -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'

Python (pip install openai):

from openai import OpenAI
client = OpenAI(base_url="%[1]s/v1", api_key="%[3]s")
raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
print(raw.parse().choices[0].message.content, "| charged", raw.headers["x-credits-charged"], "| balance", raw.headers["x-credits-balance"])

Node (npm install openai):

import OpenAI from "openai";
const client = new OpenAI({ baseURL: "%[1]s/v1", apiKey: "%[3]s" });
const { data, response } = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello!" }] }).withResponse();
console.log(data.choices[0].message.content, "| charged", response.headers.get("x-credits-charged"), "| balance", response.headers.get("x-credits-balance"));

Billing API (packs need no auth; balance needs the user JWT):

curl %[2]s/v1/billing/packs
curl %[2]s/v1/api-credits -H "Authorization: Bearer %[7]s"

Press Ctrl+C to stop.
`, proxyURL, billingURL, key, adminToken, store, demoCredits, userToken)
}

// listenError explains a listen failure; for an address in use it says how
// to pick another one (the flag, and the make variable of `make run`).
func listenError(what, addr string, err error, flag, makeVar string) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		hint := ""
		if makeVar != "" {
			hint = fmt.Sprintf(" (make run %s=127.0.0.1:PORT)", makeVar)
		}
		return fmt.Errorf("%s address %s is already in use (another tollgate?): stop what listens there, or choose another with %s host:port%s", what, addr, flag, hint)
	}
	return fmt.Errorf("%s listen on %s: %w", what, addr, err)
}
