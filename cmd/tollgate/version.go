package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Stamped by `make build` with -ldflags "-X main.version=… -X main.commit=…
// -X main.date=…" (git describe --tags --dirty, or dev without a tag; the
// commit; the build time in RFC 3339). A plain `go build` leaves them empty
// and versionInfo falls back on what the Go toolchain recorded.
var (
	version string
	commit  string
	date    string
)

// versionInfo is the version, commit and build date of this binary.
func versionInfo() (v, c, d string) {
	v, c, d = version, commit, date
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.time" && d == "":
				d = s.Value
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	if c == "" {
		c = "unknown"
	}
	if d == "" {
		d = "unknown"
	}
	return v, c, d
}

func printVersion(w io.Writer) {
	v, c, d := versionInfo()
	fmt.Fprintf(w, "tollgate %s\ncommit   %s\nbuilt    %s\ngo       %s %s/%s\n", v, c, d, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
