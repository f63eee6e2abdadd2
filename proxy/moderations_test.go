package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/tollgate/tollgate/pricing"
	"github.com/tollgate/tollgate/proxy"
)

// moderator is an OpenAI moderations endpoint on 127.0.0.1 that keeps the
// last request it received.
type moderator struct {
	mu         sync.Mutex
	path, auth string
	body       map[string]any
}

func newModerator(t *testing.T) (*moderator, string) {
	m := &moderator{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		m.path, m.auth, m.body = r.URL.Path, r.Header.Get("Authorization"), nil
		_ = json.Unmarshal(b, &m.body)
		model, _ := m.body["model"].(string)
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"modr-1","model":"`+model+`","results":[{"flagged":false,"categories":{"violence":false},"category_scores":{"violence":0.001},"category_applied_input_types":{"violence":["text"]}}]}`)
	}))
	t.Cleanup(srv.Close)
	return m, srv.URL + "/v1"
}

// POST /v1/moderations is forwarded with the provider's key and model name
// and charged at the model's price for its input (the provider reports no
// usage: the estimate, marked so); a free model is charged nothing; no
// Tollgate key, 401.
func TestModerations(t *testing.T) {
	mod, url := newModerator(t)
	models := []pricing.ModelSpec{
		{ID: "omni-moderation-latest", Tier: "free", ContextWindow: 32768, MaxOutputTokens: 1,
			Deployments: []pricing.DeploymentSpec{{Provider: "mod", Model: "omni-moderation-2024-09-26"}}},
		{ID: "priced-moderation", Tier: "core", ContextWindow: 32768, MaxOutputTokens: 1,
			Deployments: []pricing.DeploymentSpec{{Provider: "mod", Model: "upstream-mod"}}},
	}
	e := newEnv(t, envOpts{proxy: func(o *proxy.Options) {
		spec := testSpec()
		spec.Tiers["free"] = pricing.TierSpec{Input: pricing.Per1K(0), Output: pricing.Per1K(0)}
		spec.Models = append(spec.Models, models...)
		cat, err := pricing.New(spec)
		if err != nil {
			t.Fatal(err)
		}
		o.Catalog = cat
		o.Providers = append(o.Providers, proxy.Provider{Name: "mod", Kind: "openai", BaseURL: url, APIKey: "sk-mod"})
	}})
	key := e.account("acme", 100)
	client := openai.NewClient(option.WithBaseURL(e.url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	ctx := context.Background()

	var raw *http.Response
	res, err := client.Moderations.New(ctx, openai.ModerationNewParams{
		Model: "priced-moderation",
		Input: openai.ModerationNewParamsInputUnion{OfString: openai.String("Is this fine? It is a short text to moderate.")},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 1 || res.Results[0].Flagged {
		t.Fatalf("answer %+v", res)
	}
	mod.mu.Lock()
	path, auth, model := mod.path, mod.auth, mod.body["model"]
	mod.mu.Unlock()
	if path != "/v1/moderations" || auth != "Bearer sk-mod" || model != "upstream-mod" {
		t.Fatalf("forwarded to %s with %q, model %v", path, auth, model)
	}
	g := e.do(http.MethodGet, "/v1/generation?id="+raw.Header.Get("X-Request-Id"), key, "").json(t)
	in := int64(g["tokens"].(map[string]any)["input"].(float64))
	if g["estimated"] != true || in < 5 || in > 40 {
		t.Fatalf("record %v: want an estimate of the input", g)
	}
	if got := credits(t, raw.Header.Get("X-Credits-Charged")); got != in*1 { // core: 1 mc per input token
		t.Fatalf("charged %d mc for %d input tokens, want %d", got, in, in)
	}

	// The free model, named by default (no model in the request).
	before := e.balance("acme").Balance
	_, err = client.Moderations.New(ctx, openai.ModerationNewParams{
		Input: openai.ModerationNewParamsInputUnion{OfStringArray: []string{"one", "two"}},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	mod.mu.Lock()
	model = mod.body["model"]
	mod.mu.Unlock()
	if model != "omni-moderation-2024-09-26" {
		t.Fatalf("default model sent as %v", model)
	}
	if got := raw.Header.Get("X-Credits-Charged"); got != "0.000" || e.balance("acme").Balance != before {
		t.Fatalf("free model charged %s (balance %d → %d)", got, before, e.balance("acme").Balance)
	}

	if r := e.post("/v1/moderations", "", `{"input":"hi"}`); r.status != 401 {
		t.Fatalf("no key: %d %s", r.status, r.body)
	}
	for body, param := range map[string]string{
		`{"model":"priced-moderation"}`:                           "input",
		`{"model":"priced-moderation","input":"x","stream":true}`: "stream",
	} {
		if r := e.post("/v1/moderations", key, body); r.status != 400 || r.json(t)["error"].(map[string]any)["param"] != param {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
	}
	e.assertLedger("acme")
}
