package mockllm

import (
	"strings"
	"testing"
	"time"
)

func TestParseDirectives(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		body    string
		want    func(d *directives) bool
		wantErr string
	}{
		{name: "none", body: `{"messages":[]}`, want: func(d *directives) bool { return *d == noDirectives }},
		{name: "all in body", body: `{"content":"x [mock:status=418, hang ,cut=2,nousage,tokens=7,cached=3,reasoning=4,delay=1.5s,ttft=20ms,rate=9] y"}`,
			want: func(d *directives) bool {
				return *d == directives{status: 418, hang: true, cut: 2, noUsage: true, tokens: 7, cached: 3, reasoning: 4,
					delay: 1500 * time.Millisecond, ttft: 20 * time.Millisecond, rate: 9}
			}},
		{name: "header", header: "tokens=2,nousage", want: func(d *directives) bool { return d.tokens == 2 && d.noUsage }},
		{name: "bracketed header", header: " [mock:cut=1] ", want: func(d *directives) bool { return d.cut == 1 }},
		{name: "several blocks, header last wins", header: "tokens=9", body: `"[mock:tokens=1]" "[mock:cached=2,tokens=3]"`,
			want: func(d *directives) bool { return d.tokens == 9 && d.cached == 2 }},
		{name: "empty items", body: `[mock:,,tokens=1,]`, want: func(d *directives) bool { return d.tokens == 1 }},
		{name: "zero values", body: `[mock:rate=0,ttft=0s]`, want: func(d *directives) bool { return d.rate == 0 && d.ttft == 0 }},
		{name: "unknown", body: `[mock:explode]`, wantErr: "unknown directive"},
		{name: "status range", body: `[mock:status=200]`, wantErr: "400..599"},
		{name: "negative", body: `[mock:tokens=-1]`, wantErr: "tokens"},
		{name: "value on flag", body: `[mock:hang=1]`, wantErr: "takes no value"},
		{name: "bad duration", body: `[mock:delay=soon]`, wantErr: "delay"},
		{name: "unterminated", body: `[mock:tokens=1`, wantErr: "unterminated"},
		{name: "too long", body: "[mock:" + strings.Repeat(" ", maxDirectiveLen+1) + "]", wantErr: "unterminated"},
		{name: "bad header", header: "status=abc", wantErr: "X-Mock header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := noDirectives
			err := d.parse([]byte(tc.header), []byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !tc.want(&d) {
				t.Errorf("unexpected directives %+v", d)
			}
		})
	}
}

func TestCountWords(t *testing.T) {
	for _, s := range []string{"", " ", "a", " a ", "a b", "a\tb\nc\r\nd", "héllo wörld", "a\u00a0b\u2003c", "  many   spaces  here "} {
		if got, want := countWords(s), len(strings.Fields(s)); got != want {
			t.Errorf("countWords(%q) = %d, want %d", s, got, want)
		}
	}
}
