// Package teststripe runs stripe-mock for tests and builds signed Stripe
// webhook deliveries.
//
// Start launches a throwaway stripe-mock (github.com/stripe/stripe-mock,
// `go install github.com/stripe/stripe-mock@v0.203.0`) on loopback ports the
// system picks. When the binary is missing the test is skipped, except under
// CI=true, where it fails: CI must test against stripe-mock.
//
// The event builders (Event, CheckoutSession, Charge, Dispute) produce the
// JSON Stripe sends, with only the fields Tollgate reads; Sign and Deliver
// sign it as Stripe does (webhook.GenerateTestSignedPayload). Product
// packages never import this one.
package teststripe

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
)

// Server is a running stripe-mock.
type Server struct {
	// URL is its HTTP base URL ("http://127.0.0.1:PORT"): the api_base to configure.
	URL string
	cmd *exec.Cmd
}

// SecretKey is a key stripe-mock accepts.
const SecretKey = "sk_test_123"

// Binary finds stripe-mock: $PATH, then $GOBIN, then $GOPATH/bin.
func Binary() (string, error) {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "stripe-mock")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("stripe-mock not found in $PATH, $GOBIN or $GOPATH/bin (go install github.com/stripe/stripe-mock@v0.203.0)")
}

// Start starts stripe-mock for the test and stops it at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (required under CI)", err)
		}
		t.Skipf("%v; skipping (set CI=true to make this fatal)", err)
	}
	// Ports 0: the system picks free ones and stripe-mock prints them, so two
	// tests never race for a port.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stripe-mock: %v", err)
	}
	s := &Server{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = pw.Close()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "Listening for HTTP at address: "); ok {
				select {
				case addr <- strings.TrimSpace(a):
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr) // keep draining: a full pipe would block the mock
	}()
	select {
	case a := <-addr:
		s.URL = "http://" + a
	case <-time.After(60 * time.Second): // a loaded machine starts it slowly
		t.Fatalf("stripe-mock did not start within 60s")
	}
	if err := waitReady(s.URL, 10*time.Second); err != nil {
		t.Fatalf("stripe-mock at %s: %v", s.URL, err)
	}
	return s
}

func waitReady(base string, within time.Duration) error {
	host := strings.TrimPrefix(base, "http://")
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", host, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// APIVersion is the version the built events claim: newer than stripe-go
// v76's, as live accounts and stripe-mock send (the receiver must accept it).
const APIVersion = "2025-01-27.acacia"

// Event builds a Stripe event JSON around object (a map or struct that
// marshals to the resource).
func Event(id, eventType string, object any) []byte {
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": APIVersion, "created": time.Now().Unix(),
		"type": eventType, "livemode": false, "pending_webhooks": 1,
		"data":    map[string]any{"object": object},
		"request": map[string]any{"id": nil, "idempotency_key": nil},
	})
	if err != nil {
		panic(fmt.Sprintf("teststripe: marshaling event: %v", err))
	}
	return b
}

// Session describes a Checkout Session in an event.
type Session struct {
	ID            string
	Account       string // client_reference_id
	Pack          string // metadata.pack
	AmountTotal   int64
	Currency      string // default usd
	PaymentIntent string
	PaymentStatus string // default paid
	Mode          string // default payment
}

// CheckoutSession renders s as Stripe's checkout.session object.
func CheckoutSession(s Session) map[string]any {
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	var pi any
	if s.PaymentIntent != "" {
		pi = s.PaymentIntent
	}
	return map[string]any{
		"id": s.ID, "object": "checkout.session", "mode": def(s.Mode, "payment"),
		"client_reference_id": s.Account, "amount_total": s.AmountTotal, "amount_subtotal": s.AmountTotal,
		"currency": def(s.Currency, "usd"), "payment_status": def(s.PaymentStatus, "paid"), "status": "complete",
		"payment_intent": pi, "metadata": map[string]any{"account": s.Account, "pack": s.Pack},
		"livemode": false, "created": time.Now().Unix(),
	}
}

// Charge renders a charge (for charge.refunded): amount and the cumulative
// amount refunded, in minor units.
func Charge(id, paymentIntent string, amount, refunded int64, currency string, metadata map[string]string) map[string]any {
	if currency == "" {
		currency = "usd"
	}
	if metadata == nil {
		metadata = map[string]string{}
	}
	return map[string]any{
		"id": id, "object": "charge", "amount": amount, "amount_captured": amount, "amount_refunded": refunded,
		"refunded": refunded >= amount, "currency": currency, "payment_intent": paymentIntent,
		"paid": true, "status": "succeeded", "metadata": metadata, "livemode": false, "created": time.Now().Unix(),
	}
}

// Dispute renders a dispute (for charge.dispute.created).
func Dispute(id, charge, paymentIntent string, amount int64, currency string) map[string]any {
	if currency == "" {
		currency = "usd"
	}
	var pi any
	if paymentIntent != "" {
		pi = paymentIntent
	}
	return map[string]any{
		"id": id, "object": "dispute", "amount": amount, "currency": currency, "charge": charge,
		"payment_intent": pi, "status": "needs_response", "reason": "fraudulent", "livemode": false,
		"created": time.Now().Unix(),
	}
}

// Sign returns the Stripe-Signature header for payload signed with secret at time at.
func Sign(payload []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at}).Header
}

// Deliver POSTs payload to a webhook URL signed with secret now, as Stripe
// would, and returns the status and body.
func Deliver(url, secret string, payload []byte) (int, string, error) {
	return DeliverSigned(url, Sign(payload, secret, time.Now()), payload)
}

// DeliverSigned POSTs payload with the given Stripe-Signature header.
func DeliverSigned(url, signature string, payload []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, string(body), err
}
