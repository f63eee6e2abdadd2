package proxy

import (
	"testing"

	"github.com/valyala/fastjson"

	"github.com/tollgate/tollgate/pricing"
)

// Anthropic usage shapes with cache reads and writes: each input token is
// counted once, at the kind it was billed as.
func TestParseAnthropicUsageCacheWrites(t *testing.T) {
	tests := []struct {
		name string
		json string
		want pricing.Usage
	}{
		{"no cache", `{"input_tokens":25,"output_tokens":15}`,
			pricing.Usage{Input: 25, Output: 15}},
		{"read only", `{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":1800,"output_tokens":15}`,
			pricing.Usage{Input: 25, CachedInput: 1800, Output: 15}},
		{"write without split: 5 minutes", `{"input_tokens":9,"cache_creation_input_tokens":640,"output_tokens":30}`,
			pricing.Usage{Input: 9, CacheWrite: 640, Output: 30}},
		{"split, all 5 minutes", `{"input_tokens":21,"cache_creation_input_tokens":188,"cache_read_input_tokens":2048,"cache_creation":{"ephemeral_5m_input_tokens":188,"ephemeral_1h_input_tokens":0},"output_tokens":393}`,
			pricing.Usage{Input: 21, CachedInput: 2048, CacheWrite: 188, Output: 393}},
		{"split 5m and 1h", `{"input_tokens":40,"cache_creation_input_tokens":3000,"cache_read_input_tokens":500,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000},"output_tokens":120}`,
			pricing.Usage{Input: 40, CachedInput: 500, CacheWrite: 1000, CacheWrite1h: 2000, Output: 120}},
		{"split, all 1 hour", `{"input_tokens":1,"cache_creation_input_tokens":50,"cache_creation":{"ephemeral_1h_input_tokens":50},"output_tokens":2}`,
			pricing.Usage{Input: 1, CacheWrite1h: 50, Output: 2}},
		// Figures that disagree are billed at the larger reading, never summed twice.
		{"split short of the total", `{"cache_creation_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":30}}`,
			pricing.Usage{CacheWrite: 70, CacheWrite1h: 30}},
		{"split past the total", `{"cache_creation_input_tokens":100,"cache_creation":{"ephemeral_5m_input_tokens":90,"ephemeral_1h_input_tokens":30}}`,
			pricing.Usage{CacheWrite: 90, CacheWrite1h: 30}},
		{"1h past the total", `{"cache_creation_input_tokens":10,"cache_creation":{"ephemeral_1h_input_tokens":30}}`,
			pricing.Usage{CacheWrite1h: 30}},
		{"split without a total", `{"input_tokens":3,"cache_creation":{"ephemeral_5m_input_tokens":7,"ephemeral_1h_input_tokens":11}}`,
			pricing.Usage{Input: 3, CacheWrite: 7, CacheWrite1h: 11}},
		{"cache_creation not an object", `{"cache_creation_input_tokens":12,"cache_creation":[1,2]}`,
			pricing.Usage{CacheWrite: 12}},
		{"a count given as a string or a float", `{"input_tokens":"4","cache_read_input_tokens":2.0,"output_tokens":1e1}`,
			pricing.Usage{Input: 4, CachedInput: 2, Output: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p fastjson.Parser
			v, err := p.Parse(tt.json)
			if err != nil {
				t.Fatal(err)
			}
			u, ok := parseAnthropicUsage(v)
			if !ok || u.Usage != tt.want {
				t.Fatalf("parseAnthropicUsage = %+v, %v; want %+v", u.Usage, ok, tt.want)
			}
		})
	}
}

// OpenAI-shaped usage has no cache-write field: cached tokens stay cached
// input, the rest input.
func TestParseOpenAIUsageHasNoCacheWrites(t *testing.T) {
	var p fastjson.Parser
	v, err := p.Parse(`{"prompt_tokens":1117,"completion_tokens":46,"prompt_tokens_details":{"cached_tokens":1024},"cache_creation_input_tokens":50}`)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := parseOpenAIUsage(v)
	if want := (pricing.Usage{Input: 93, CachedInput: 1024, Output: 46}); u.Usage != want {
		t.Fatalf("parseOpenAIUsage = %+v, want %+v", u.Usage, want)
	}
}

// A chat call's web searches are charged when the provider reports them.
func TestParseOpenAIUsageWebSearches(t *testing.T) {
	for body, want := range map[string]pricing.Usage{
		`{"prompt_tokens":10,"completion_tokens":5,"server_tool_use":{"web_search_requests":2}}`:  {Input: 10, Output: 5, WebSearch: 2},
		`{"prompt_tokens":10,"completion_tokens":5}`:                                              {Input: 10, Output: 5},
		`{"prompt_tokens":10,"completion_tokens":5,"server_tool_use":{"web_search_requests":-3}}`: {Input: 10, Output: 5},
	} {
		var p fastjson.Parser
		v, err := p.Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		if u, _ := parseOpenAIUsage(v); u.Usage != want {
			t.Errorf("%s: %+v, want %+v", body, u.Usage, want)
		}
	}
}

// A usage object whose counts are garbled is no usage: the call is
// estimated, never charged 0 for a count that could not be read.
func TestGarbledUsageIsNoUsage(t *testing.T) {
	tests := []struct {
		name  string
		parse func(*fastjson.Value) (usage, bool)
		json  string
		ok    bool
		want  pricing.Usage
	}{
		{"openai: empty", parseOpenAIUsage, `{}`, false, pricing.Usage{}},
		{"openai: null counts", parseOpenAIUsage, `{"prompt_tokens":null,"completion_tokens":null}`, false, pricing.Usage{}},
		{"openai: null prompt", parseOpenAIUsage, `{"prompt_tokens":null,"completion_tokens":12}`, false, pricing.Usage{}},
		{"openai: negative", parseOpenAIUsage, `{"prompt_tokens":-5,"completion_tokens":12}`, false, pricing.Usage{}},
		{"openai: text", parseOpenAIUsage, `{"prompt_tokens":"many","completion_tokens":12}`, false, pricing.Usage{}},
		{"openai: float and string", parseOpenAIUsage, `{"prompt_tokens":"30","completion_tokens":12.0}`, true, pricing.Usage{Input: 30, Output: 12}},
		{"openai: a fraction rounds up", parseOpenAIUsage, `{"prompt_tokens":30.2,"completion_tokens":1}`, true, pricing.Usage{Input: 31, Output: 1}},
		{"openai: embeddings (no completion)", parseOpenAIUsage, `{"prompt_tokens":8,"total_tokens":8}`, true, pricing.Usage{Input: 8}},
		{"responses: null output", parseResponsesUsage, `{"input_tokens":10,"output_tokens":null}`, false, pricing.Usage{}},
		{"responses: float", parseResponsesUsage, `{"input_tokens":10,"output_tokens":3.0}`, true, pricing.Usage{Input: 10, Output: 3}},
		{"anthropic: empty", parseAnthropicUsage, `{}`, false, pricing.Usage{}},
		{"anthropic: garbled", parseAnthropicUsage, `{"input_tokens":-4,"cache_creation_input_tokens":"x","cache_read_input_tokens":-1}`, false, pricing.Usage{}},
		{"anthropic: null output", parseAnthropicUsage, `{"output_tokens":null}`, false, pricing.Usage{}},
		{"anthropic: delta", parseAnthropicUsage, `{"output_tokens":15}`, true, pricing.Usage{Output: 15}},
		{"anthropic: a null cache count is no count", parseAnthropicUsage, `{"input_tokens":25,"cache_creation_input_tokens":null,"cache_read_input_tokens":1800,"output_tokens":1}`,
			true, pricing.Usage{Input: 25, CachedInput: 1800, Output: 1}},
		{"openai: null completion", parseOpenAIUsage, `{"prompt_tokens":5,"completion_tokens":null}`, false, pricing.Usage{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := fastjson.Parse(tt.json)
			if err != nil {
				t.Fatal(err)
			}
			u, ok := tt.parse(v)
			if ok != tt.ok || u.Usage != tt.want {
				t.Fatalf("= %+v, %v; want %+v, %v", u.Usage, ok, tt.want, tt.ok)
			}
		})
	}
}
