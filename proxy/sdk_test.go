package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAISDK drives the gateway with the official OpenAI Go SDK, changing
// only the base URL and the API key, streaming and not.
func TestOpenAISDK(t *testing.T) {
	e := newEnv(t, envOpts{})
	key := e.account("acme", 100)
	client := openai.NewClient(option.WithBaseURL(e.url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	ctx := context.Background()

	var raw *http.Response
	comp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello from the SDK")},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(comp.Choices) == 0 || comp.Choices[0].Message.Content == "" {
		t.Fatalf("empty completion: %+v", comp)
	}
	want := comp.Usage.PromptTokens*1 + comp.Usage.CompletionTokens*2
	if got := credits(t, raw.Header.Get("X-Credits-Charged")); got != want {
		t.Fatalf("charged %d mc, want %d", got, want)
	}
	if got := credits(t, raw.Header.Get("X-Credits-Balance")); got != 100_000-want {
		t.Fatalf("balance header %d", got)
	}

	before := e.balance("acme").Balance
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "gpt-4.1",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Stream to me")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithResponseInto(&raw))
	var acc openai.ChatCompletionAccumulator
	var usageCredits string
	for stream.Next() {
		chunk := stream.Current()
		acc.AddChunk(chunk)
		if chunk.Usage.TotalTokens > 0 {
			var m struct {
				Usage struct {
					Credits string `json:"credits"`
				} `json:"usage"`
			}
			if err := json.Unmarshal([]byte(chunk.RawJSON()), &m); err != nil {
				t.Fatal(err)
			}
			usageCredits = m.Usage.Credits
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Choices[0].Message.Content == "" || acc.Usage.TotalTokens == 0 {
		t.Fatalf("stream lost content or usage: %+v", acc.ChatCompletion)
	}
	if raw.Header.Get("X-Credits-Tier") != "ultra" || raw.Header.Get("X-Credits-Balance") == "" {
		t.Fatalf("stream headers %v", raw.Header)
	}
	want = acc.Usage.PromptTokens*8 + acc.Usage.CompletionTokens*16
	if got := before - e.balance("acme").Balance; got != want {
		t.Fatalf("stream charged %d mc, want %d", got, want)
	}
	if got := credits(t, usageCredits); got != want {
		t.Fatalf("usage.credits %d, want %d", got, want)
	}

	// Errors reach the SDK as API errors with the right status and code.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	var apiErr *openai.Error
	if !asError(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Fatalf("unknown model error: %v", err)
	}

	// GET /v1/models/{id}, by alias, and an unknown id.
	m, err := client.Models.Get(ctx, "mini")
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "gpt-4o-mini" || m.Object != "model" || m.OwnedBy != "openai" {
		t.Fatalf("model %+v", m)
	}
	_, err = client.Models.Get(ctx, "no-such-model")
	if !asError(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Fatalf("unknown model: %v", err)
	}
	e.assertLedger("acme")
}
