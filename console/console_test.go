package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestServe(t *testing.T) {
	tests := []struct {
		name, path string
		status     int
		ctype      string
	}{
		{"index", "/console/", 200, "text/html; charset=utf-8"},
		{"module", "/console/app.js", 200, "text/javascript; charset=utf-8"},
		{"stylesheet", "/console/style.css", 200, "text/css; charset=utf-8"},
		{"icon", "/console/favicon.svg", 200, "image/svg+xml"},
		{"missing", "/console/nope.js", 404, "text/plain; charset=utf-8"},
		{"escape", "/console/../go.mod", 404, "text/plain; charset=utf-8"},
	}
	h := New(Options{FrameAncestors: []string{"https://app.example/", "*", "bad origin;"}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", tt.path, nil))
			if w.Code != tt.status || w.Header().Get("Content-Type") != tt.ctype {
				t.Fatalf("%s: %d %q, want %d %q", tt.path, w.Code, w.Header().Get("Content-Type"), tt.status, tt.ctype)
			}
			csp := w.Header().Get("Content-Security-Policy")
			if !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "style-src 'self';") ||
				strings.Contains(csp, "unsafe") || !strings.HasSuffix(csp, "frame-ancestors https://app.example") {
				t.Fatalf("CSP %q", csp)
			}
			if w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("X-Frame-Options") != "" {
				t.Fatalf("headers %v", w.Header())
			}
		})
	}
}

func TestNoFraming(t *testing.T) {
	for _, origins := range [][]string{nil, {"*"}} {
		h := New(Options{FrameAncestors: origins})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/console/", nil))
		if !strings.HasSuffix(w.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") || w.Header().Get("X-Frame-Options") != "DENY" {
			t.Fatalf("origins %v: %v", origins, w.Header())
		}
	}
}

// The assets cannot need unsafe-inline, and never turn server text into
// markup: no inline script, style or handler attribute in the page, and no
// HTML-parsing sink in the scripts.
func TestSafeByConstruction(t *testing.T) {
	sub, _ := fs.Sub(assets, "web")
	page, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), // a script with a body
		regexp.MustCompile(`(?i)\sstyle\s*=`),
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
		regexp.MustCompile(`(?i)<style`),
		regexp.MustCompile(`(?i)https?://`), // nothing from another origin
	} {
		if re.Match(page) {
			t.Errorf("index.html matches %s", re)
		}
	}
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\('on|\.style\.`)
	n := 0
	err = fs.WalkDir(sub, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(path, ".js") {
			return err
		}
		n++
		src, err := fs.ReadFile(sub, path)
		if err != nil {
			return err
		}
		if m := sinks.Find(src); m != nil {
			t.Errorf("%s uses %s", path, m)
		}
		if regexp.MustCompile(`https?://[a-z]`).Match(src) && path != "dom.js" {
			t.Errorf("%s names another origin", path)
		}
		return nil
	})
	if err != nil || n < 5 {
		t.Fatalf("walked %d scripts: %v", n, err)
	}
}

func TestHead(t *testing.T) {
	w := httptest.NewRecorder()
	New(Options{}).ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/console/", nil))
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Fatalf("HEAD: %d, %d bytes", w.Code, w.Body.Len())
	}
}
