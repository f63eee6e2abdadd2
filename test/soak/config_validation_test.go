package soak

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestFaultHoldTTLShorterThanACall: a hold must outlive the longest call it
// covers, or it expires while the call runs — another call then reserves the
// same credits, and the settle, finding the hold gone, charges only what is
// left (docs/architecture.md §4: settle's expired-hold path): the rest of the call is
// free. A configuration whose hold_ttl is shorter than stream_timeout (or
// request_timeout) must therefore be refused at start, whatever the other
// timeout says.
func TestFaultHoldTTLShorterThanACall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits map[string]any
	}{
		{"shorter than stream_timeout", map[string]any{"proxy.hold_ttl": "3s", "proxy.stream_timeout": "30m", "proxy.request_timeout": "3s"}},
		{"shorter than request_timeout", map[string]any{"proxy.hold_ttl": "3s", "proxy.stream_timeout": "3s", "proxy.request_timeout": "10m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, tc.edits)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tollgateBinary(t), "proxy", "--config", cfg, "--addr", "127.0.0.1:0", "--metrics-addr", "off")
			cmd.Env = append(os.Environ(), procEnv("http://127.0.0.1:9/v1", "REDIS_URL=redis://127.0.0.1:9/0")...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			started := false
			for sc.Scan() {
				if strings.Contains(sc.Text(), "listening on") {
					started = true
					_ = cmd.Process.Kill()
					break
				}
			}
			_, _ = io.Copy(io.Discard, stdout)
			err = cmd.Wait()
			if started {
				t.Fatalf("the proxy started with %v: its holds can expire while a call runs", tc.edits)
			}
			if err == nil || !strings.Contains(stderr.String(), "proxy.hold_ttl") {
				t.Fatalf("exit %v, want a refusal naming proxy.hold_ttl:\n%s", err, stderr.String())
			}
		})
	}
}
