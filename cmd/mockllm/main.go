// Command mockllm runs the deterministic mock OpenAI-compatible (and
// Anthropic Messages) LLM provider of internal/mockllm, for `tollgate dev`,
// manual testing and load benchmarks.
//
//	mockllm -addr 127.0.0.1:9090 -ttft 200ms -token-rate 50
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tollgate/tollgate/internal/mockllm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "mockllm:", err)
		os.Exit(1)
	}
}

// run parses args, serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mockllm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg mockllm.Config
	addr := fs.String("addr", "127.0.0.1:9090", "listen address (host:port; port 0 picks a free port)")
	fs.DurationVar(&cfg.Latency, "latency", 0, "latency added before non-streaming responses")
	fs.DurationVar(&cfg.TTFT, "ttft", 0, "time to first streamed chunk")
	fs.IntVar(&cfg.TokensPerSecond, "token-rate", 0, "stream pacing in tokens per second (0 = as fast as possible)")
	fs.IntVar(&cfg.OutputTokens, "output-tokens", mockllm.DefaultOutputTokens, "completion length when the request sets no smaller max tokens")
	fs.IntVar(&cfg.FailEvery, "fail-every", 0, "if > 0, every Nth request answers 500")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if cfg.Latency < 0 || cfg.TTFT < 0 || cfg.TokensPerSecond < 0 || cfg.OutputTokens < 0 || cfg.FailEvery < 0 {
		return errors.New("-latency, -ttft, -token-rate, -output-tokens and -fail-every must not be negative")
	}

	srv, baseURL, err := mockllm.StartAt(cfg, *addr)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Fprintf(stdout, "mockllm listening on %s\n", baseURL)

	<-ctx.Done()
	fmt.Fprintln(stdout, "mockllm shutting down")
	if err := srv.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
