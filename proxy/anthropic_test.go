package proxy

import (
	"strings"
	"testing"
)

// TestWideningBetas: every anthropic-beta name that widens the context window
// is found, in any header, in any position of a comma-separated list.
func TestWideningBetas(t *testing.T) {
	for _, tc := range []struct {
		value, want string
	}{
		{"context-1m-2025-08-07", "context-1m-2025-08-07"},
		{"prompt-caching-2024-07-31,context-1m-2025-08-07", "context-1m-2025-08-07"},
		{`"context-1m-2025-08-07"`, "context-1m-2025-08-07"},
		{" files-api-2025-04-14 ,  Context-1M-2025-08-07 ", "Context-1M-2025-08-07"},
		{"context-2m-2026-01-01", "context-2m-2026-01-01"},
		{"context-management-2025-06-27", ""},
		{"output-128k-2025-02-19,interleaved-thinking-2025-05-14", ""},
		{"context-", ""},
		{",,", ""},
		{"", ""},
	} {
		if got := string(wideningBeta([]byte(tc.value))); got != tc.want {
			t.Errorf("wideningBeta(%q) = %q, want %q", tc.value, got, tc.want)
		}
	}
	// A provider configured to send such a beta is refused at start.
	_, err := New(Options{Catalog: benchCatalog(t), Meter: &fakeMeter{}, Providers: []Provider{{Name: "anthropic", Kind: "anthropic",
		BaseURL: "http://127.0.0.1:9/v1", Headers: map[string]string{"Anthropic-Beta": "files-api-2025-04-14,context-1m-2025-08-07"}}}})
	if err == nil || !strings.Contains(err.Error(), "context-1m-2025-08-07") {
		t.Fatalf("New with a widening provider beta: %v", err)
	}
}
