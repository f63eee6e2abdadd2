package console

import (
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed web
var assets embed.FS

// Options configure a Handler.
type Options struct {
	// FrameAncestors are the origins (scheme://host[:port]) that may embed
	// the console in a frame: billing.allowed_origins. Empty, or "*": none
	// may (a console any site could frame would invite clickjacking).
	FrameAncestors []string
}

// Handler serves the console's files under /console/.
type Handler struct {
	files fs.FS
	csp   string
	frame bool // some origin may frame the console
}

// New builds a Handler.
func New(opts Options) *Handler {
	sub, _ := fs.Sub(assets, "web") // "web" is embedded: cannot fail
	ancestors := make([]string, 0, len(opts.FrameAncestors))
	for _, o := range opts.FrameAncestors {
		o = strings.TrimRight(o, "/")
		if o == "" || o == "*" || strings.ContainsAny(o, " ;,'\"") {
			continue
		}
		ancestors = append(ancestors, o)
	}
	fa := "'none'"
	if len(ancestors) > 0 {
		fa = strings.Join(ancestors, " ")
	}
	return &Handler{
		files: sub, frame: len(ancestors) > 0,
		csp: "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; " +
			"frame-ancestors " + fa,
	}
}

// CSP is the Content-Security-Policy every console response carries.
func (h *Handler) CSP() string { return h.csp }

// SetHeaders writes the console's security headers (also for the responses
// billing serves under /console/ itself).
func (h *Handler) SetHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	if !h.frame {
		hd.Set("X-Frame-Options", "DENY")
	}
}

// ServeHTTP answers GET and HEAD /console/ (index.html) and /console/<file>.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.SetHeaders(w)
	name := strings.TrimPrefix(path.Clean(r.URL.Path), "/console")
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		name = "index.html"
	}
	data, err := fs.ReadFile(h.files, name)
	if err != nil || strings.HasPrefix(name, ".") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("not found\n"))
		return
	}
	ct := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".js", ".mjs":
		ct = "text/javascript; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	case "":
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data)
}
