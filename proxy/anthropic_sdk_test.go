package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/tollgate/tollgate/internal/mockllm"
	"github.com/tollgate/tollgate/metering"
	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// TestAnthropicSDK drives /v1/messages with the official Anthropic Go SDK,
// changing only the base URL and the API key (sent as x-api-key), streaming
// and not, against the mock provider. The charge must be the usage the SDK
// reports at the tier's rates: input and cache writes at the input rate,
// cache reads at the cached rate, output at the output rate.
func TestAnthropicSDK(t *testing.T) {
	mock, mockURL, err := mockllm.Start(mockllm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mock.Close() })
	rp := func(v int64) *pricing.Rate { r := pricing.Per1K(v); return &r }
	spec := pricing.Spec{
		CreditsPerUSD: 100000, FeeBps: 500,
		Tiers: map[string]pricing.TierSpec{"ultra": {Input: pricing.Per1K(8), CachedInput: rp(2), Output: pricing.Per1K(16)}},
		Models: []pricing.ModelSpec{{ID: "claude-sonnet", Tier: "ultra", ContextWindow: 200000, MaxOutputTokens: 64000,
			Deployments: []pricing.DeploymentSpec{{Provider: "anthropic", Model: "claude-sonnet-4-5"}}}},
	}
	e := newEnvWith(t, spec, []proxy.Provider{{Name: "anthropic", Kind: "anthropic", BaseURL: mockURL, APIKey: "sk-ant-upstream"}})
	e.mock = mock
	key := e.account("acme", 1000)
	client := anthropic.NewClient(option.WithBaseURL(e.url), option.WithAPIKey(key), option.WithMaxRetries(0))
	ctx := context.Background()
	price := func(u anthropic.Usage) int64 {
		return (u.InputTokens+u.CacheCreationInputTokens)*8 + u.CacheReadInputTokens*2 + u.OutputTokens*16
	}
	params := anthropic.MessageNewParams{
		Model:     "claude-sonnet",
		MaxTokens: 1024,
		System:    []anthropic.TextBlockParam{{Text: "You are brief."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("[mock:cached=4,tokens=12] Hello from the Anthropic SDK"))},
	}

	t.Run("message", func(t *testing.T) {
		before := e.balance("acme").Balance
		var raw *http.Response
		msg, err := client.Messages.New(ctx, params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) == 0 || msg.Content[0].Text == "" || msg.Usage.CacheReadInputTokens != 4 || msg.Usage.OutputTokens != 12 {
			t.Fatalf("message %+v", msg)
		}
		want := price(msg.Usage)
		if got := credits(t, raw.Header.Get("X-Credits-Charged")); got != want {
			t.Fatalf("X-Credits-Charged %d mc, want %d (usage %+v)", got, want, msg.Usage)
		}
		if got := before - e.balance("acme").Balance; got != want {
			t.Fatalf("balance moved by %d, want %d", got, want)
		}
		checkSDKEntry(t, e, raw.Header.Get("X-Request-Id"), msg.Usage, want, false)
		_, _, hdr := mock.LastRequest()
		if hdr["Anthropic-Version"] != "2023-06-01" && hdr["anthropic-version"] != "2023-06-01" {
			t.Errorf("anthropic-version not forwarded: %v", hdr)
		}
		if k := hdr["X-Api-Key"] + hdr["x-api-key"]; k != "sk-ant-upstream" {
			t.Errorf("upstream x-api-key %q, want the provider's key", k)
		}
	})

	t.Run("stream", func(t *testing.T) {
		before := e.balance("acme").Balance
		var raw *http.Response
		stream := client.Messages.NewStreaming(ctx, params, option.WithResponseInto(&raw))
		var msg anthropic.Message
		var deltaCredits string
		for stream.Next() {
			ev := stream.Current()
			if err := msg.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type == "message_delta" {
				var d struct {
					Usage struct {
						Credits string `json:"credits"`
					} `json:"usage"`
				}
				if err := json.Unmarshal([]byte(ev.RawJSON()), &d); err != nil {
					t.Fatal(err)
				}
				deltaCredits = d.Usage.Credits
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) == 0 || msg.Content[0].Text == "" || msg.Usage.OutputTokens != 12 || msg.Usage.CacheReadInputTokens != 4 {
			t.Fatalf("accumulated message %+v", msg)
		}
		want := price(msg.Usage)
		if got := before - e.balance("acme").Balance; got != want {
			t.Fatalf("stream charged %d mc, want %d (usage %+v)", got, want, msg.Usage)
		}
		if got := credits(t, deltaCredits); got != want {
			t.Fatalf("message_delta usage.credits %d, want %d", got, want)
		}
		if raw.Header.Get("X-Credits-Tier") != "ultra" {
			t.Fatalf("stream headers %v", raw.Header)
		}
		checkSDKEntry(t, e, raw.Header.Get("X-Request-Id"), msg.Usage, want, true)
	})

	t.Run("errors", func(t *testing.T) {
		p := params
		p.Model = "no-such-model"
		_, err := client.Messages.New(ctx, p)
		var apiErr *anthropic.Error
		if !asError(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Fatalf("unknown model: %v", err)
		}
	})

	t.Run("models", func(t *testing.T) {
		m, err := client.Models.Get(ctx, "claude-sonnet", anthropic.ModelGetParams{})
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != "claude-sonnet" || m.DisplayName != "claude-sonnet" || m.Type != "model" || !m.CreatedAt.Equal(time.Unix(0, 0)) {
			t.Fatalf("model %+v", m)
		}
		_, err = client.Models.Get(ctx, "no-such-model", anthropic.ModelGetParams{})
		var apiErr *anthropic.Error
		if !asError(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.RawJSON(), "not_found_error") {
			t.Fatalf("unknown model: %v", err)
		}
		page, err := client.Models.List(ctx, anthropic.ModelListParams{})
		if err != nil || len(page.Data) != 1 || page.Data[0].ID != "claude-sonnet" || page.HasMore {
			t.Fatalf("list %+v %v", page, err)
		}
	})

	t.Run("count tokens", func(t *testing.T) {
		before := e.balance("acme")
		count, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    "claude-sonnet",
			System:   anthropic.MessageCountTokensParamsSystemUnion{OfTextBlockArray: []anthropic.TextBlockParam{{Text: "You are brief."}}},
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("count me please"))},
		})
		if err != nil {
			t.Fatal(err)
		}
		if count.InputTokens != 3+3+3 {
			t.Fatalf("input_tokens %d", count.InputTokens)
		}
		path, body, hdr := mock.LastRequest()
		var sent struct{ Model string }
		if err := json.Unmarshal(body, &sent); err != nil || path != "/v1/messages/count_tokens" || sent.Model != "claude-sonnet-4-5" {
			t.Fatalf("upstream got %s %s", path, body)
		}
		if hdr["X-Api-Key"] != "sk-ant-upstream" || hdr["Anthropic-Version"] != "2023-06-01" {
			t.Fatalf("upstream headers %v", hdr)
		}
		if after := e.balance("acme"); after != before {
			t.Fatalf("count_tokens moved the account: %+v → %+v", before, after)
		}
	})
	e.assertLedger("acme")
}

func checkSDKEntry(t *testing.T, e *env, id string, u anthropic.Usage, mc int64, streamed bool) {
	t.Helper()
	e.sync()
	entries, err := e.store.Ledger(context.Background(), "acme", metering.LedgerQuery{Limit: 1})
	if err != nil || len(entries) != 1 {
		t.Fatalf("ledger: %v %v", entries, err)
	}
	checkUsageEntry(t, entries[0], id, "claude-sonnet", "anthropic", streamed, false, fixtureExpect{
		Input: u.InputTokens + u.CacheCreationInputTokens, CachedInput: u.CacheReadInputTokens, Output: u.OutputTokens,
	}, mc)
}
