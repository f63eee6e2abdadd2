package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var urlRe = regexp.MustCompile(`http://127\.0\.0\.1:\d+/v1`)

func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-addr", "127.0.0.1:0", "-output-tokens", "3", "-fail-every", "2"}, &stdout, &stderr)
	}()

	var base string
	deadline := time.Now().Add(5 * time.Second)
	for base == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no base URL printed; stdout %q stderr %q", stdout.String(), stderr.String())
		}
		select {
		case err := <-errc:
			t.Fatalf("run returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		base = urlRe.FindString(stdout.String())
	}

	client := &http.Client{Timeout: 5 * time.Second}
	for i, want := range []int{200, 500} {
		resp, err := client.Post(base+"/chat/completions", "application/json", strings.NewReader(`{"messages":[]}`))
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d: %s", i+1, resp.StatusCode, want, body)
		}
		if want == 200 && !strings.Contains(string(body), `"content":"tok1 tok2 tok3"`) {
			t.Errorf("-output-tokens not applied: %s", body)
		}
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := client.Get(base + "/models"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestRunBadArgs(t *testing.T) {
	for _, args := range [][]string{
		{"-nope"},
		{"-latency", "soon"},
		{"-token-rate", "-1"},
		{"extra"},
		{"-addr", "256.0.0.1:bad"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(stderr.String(), "-token-rate") {
		t.Errorf("usage does not list flags: %q", stderr.String())
	}
}
