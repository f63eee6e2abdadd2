package main

import (
	"flag"
	"fmt"
	"io"
)

// envHelp lists the environment variables the commands read: TOLLGATE_CONFIG
// directly, the others through ${VAR} references in the shipped
// configs/tollgate.yaml (TestHelpListsEnvironment keeps the two in step).
// Help never needs Redis or a configuration file.
const envHelp = `
Environment:
  TOLLGATE_CONFIG               configuration file (default configs/tollgate.yaml)
  Read by the shipped configuration through ${VAR} (any ${VAR} or ${VAR:-default}
  in your own file is read the same way):
  REDIS_URL                     redis://[user:password@]host:6379/0 (standalone)
  REDIS_ADDRS                   host1:6379,host2:6379,… (Cluster; Sentinel with REDIS_MASTER_NAME)
  REDIS_MASTER_NAME, REDIS_PASSWORD
  DATABASE_URL                  postgres://… the durable books (unset: Redis only, no durable books)
  TOLLGATE_PROXY_ADDR           proxy listen address (default 127.0.0.1:8080)
  TOLLGATE_BILLING_ADDR         billing listen address (default 127.0.0.1:8081)
  TOLLGATE_LOG_LEVEL            debug, info, warn, error (default info)
  TOLLGATE_LOG_FORMAT           json or console (default json)
  OPENAI_API_KEY, OPENAI_BASE_URL
  ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
  GEMINI_API_KEY, GEMINI_BASE_URL
  DEEPSEEK_API_KEY, DEEPSEEK_BASE_URL
  TOLLGATE_ADMIN_TOKEN          billing admin API token (≥ 32 characters; unset: admin API off)
  TOLLGATE_JWT_SECRET           HS256 secret for end-user JWTs on the billing API
  TOLLGATE_JWT_PUBLIC_KEY_FILE, TOLLGATE_JWT_ISSUER, TOLLGATE_JWT_AUDIENCE
  TOLLGATE_PUBLIC_URL, TOLLGATE_SUCCESS_URL, TOLLGATE_CANCEL_URL
  STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE
  STRIPE_PRICE_STARTER, STRIPE_PRICE_TEAM   Stripe prices of the shipped plans

Signals (proxy, billing): SIGHUP reloads the configuration file; SIGTERM or
SIGINT drains (readyz 503, calls in flight finish) and exits.
`

// commandHelp says what each serving command does, above its flags.
var commandHelp = map[string]string{
	"proxy":   "run the metering proxy (OpenAI- and Anthropic-compatible API)",
	"billing": "run the billing sidecar and admin API",
	"dev":     "run proxy + billing in one process, with an embedded Redis unless REDIS_URL is set and mock providers for keys not set",
}

// setUsage makes fs's -h print the command, its flags and the environment.
func setUsage(fs *flag.FlagSet, name string, w io.Writer) {
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: tollgate %s [flags]\n\n", name)
		if h := commandHelp[name]; h != "" {
			fmt.Fprintf(w, "%s\n\n", h)
		}
		fmt.Fprintln(w, "Flags:")
		fs.PrintDefaults()
		fmt.Fprint(w, envHelp)
	}
}
