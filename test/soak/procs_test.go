package soak

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a running tollgate process (proxy or billing).
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	URL    string // http://127.0.0.1:PORT
	Addr   string // 127.0.0.1:PORT
	logf   string // stderr (logs) file
	done   chan struct{}
	mu     sync.Mutex
	exit   error // after done
	exited time.Time
}

// procEnv is the environment every tollgate process gets: providers all
// pointed at upstream, quiet JSON logs, and extra (later entries win).
func procEnv(upstreamURL string, extra ...string) []string {
	env := []string{
		"OPENAI_BASE_URL=" + upstreamURL, "OPENAI_API_KEY=sk-soak-openai",
		"ANTHROPIC_BASE_URL=" + upstreamURL, "ANTHROPIC_API_KEY=sk-soak-anthropic",
		"GEMINI_BASE_URL=" + upstreamURL, "GEMINI_API_KEY=sk-soak-gemini",
		"DEEPSEEK_BASE_URL=" + upstreamURL, "DEEPSEEK_API_KEY=sk-soak-deepseek",
		"TOLLGATE_LOG_LEVEL=warn", "TOLLGATE_LOG_FORMAT=json", "TOLLGATE_CONFIG=",
		"REDIS_URL=", "REDIS_MASTER_NAME=", "REDIS_PASSWORD=",
		"STRIPE_SECRET_KEY=", "STRIPE_WEBHOOK_SECRET=", "STRIPE_API_BASE=",
		"TOLLGATE_ADMIN_TOKEN=", "TOLLGATE_JWT_SECRET=",
	}
	return append(env, extra...)
}

// startProc starts `tollgate <sub> --config cfg --addr 127.0.0.1:0` and waits
// until it prints its address. At cleanup it is stopped (SIGTERM, then
// SIGKILL) and its log is searched for panics and data races.
func startProc(t testing.TB, sub, name, cfg string, env []string) *proc {
	t.Helper()
	bin := tollgateBinary(t)
	p := &proc{t: t, name: name, done: make(chan struct{}), logf: filepath.Join(t.TempDir(), name+".log")}
	logFile, err := os.Create(p.logf)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, sub, "--config", cfg, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Env = append(p.cmd.Env, "GORACE=halt_on_error=0 exitcode=66 atexit_sleep_ms=0")
	p.cmd.Stderr = logFile
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if i := strings.Index(line, "listening on http://"); i >= 0 {
				select {
				case addrc <- strings.TrimSpace(line[i+len("listening on http://"):]):
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		err := p.cmd.Wait()
		logFile.Close()
		p.mu.Lock()
		p.exit, p.exited = err, time.Now()
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	select {
	case addr := <-addrc:
		p.Addr, p.URL = addr, "http://"+addr
	case <-p.done:
		t.Fatalf("%s exited at start: %v\n%s", name, p.exitErr(), p.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start within 60s\n%s", name, p.log())
	}
	return p
}

// startProxy starts a proxy replica.
func startProxy(t testing.TB, name, cfg string, env []string) *proc {
	t.Helper()
	return startProc(t, "proxy", name, cfg, env)
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// waitExit waits up to d for the process to exit and returns its exit error.
func (p *proc) waitExit(d time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.exitErr(), true
	case <-time.After(d):
		return nil, false
	}
}

// fullLog is the whole log.
func (p *proc) fullLog() string {
	b, _ := os.ReadFile(p.logf)
	return string(b)
}

// log is the log's last 8,000 bytes (for failure messages).
func (p *proc) log() string {
	b, _ := os.ReadFile(p.logf)
	if len(b) > 8000 {
		b = append([]byte("…"), b[len(b)-8000:]...)
	}
	return string(b)
}

// logProblems returns the lines of the log that show a crash or a data race.
func (p *proc) logProblems() string {
	b, _ := os.ReadFile(p.logf)
	for _, marker := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if i := bytes.Index(b, []byte(marker)); i >= 0 {
			end := min(len(b), i+6000)
			return string(b[i:end])
		}
	}
	return ""
}

func (p *proc) cleanup() {
	if p.running() {
		start := time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if _, ok := p.waitExit(15 * time.Second); !ok {
			p.t.Logf("%s did not stop within 15s of SIGTERM; killed", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		} else if d := time.Since(start); d > 2*time.Second {
			p.t.Logf("%s took %s to stop", p.name, d.Round(time.Millisecond))
		}
	}
	if dir := os.Getenv("TOLLGATE_SOAK_LOGS"); dir != "" {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + "-" + p.name + ".log"
		if b, err := os.ReadFile(p.logf); err == nil {
			_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
	if s := p.logProblems(); s != "" {
		p.t.Errorf("%s log shows a crash or a data race:\n%s", p.name, s)
	}
	var ee *exec.ExitError
	if err := p.exitErr(); errors.As(err, &ee) && ee.ExitCode() == 66 {
		p.t.Errorf("%s exited 66: the race detector found a data race\n%s", p.name, p.log())
	}
}

// assertAlive fails the test when the process has exited (a crash).
func (p *proc) assertAlive(t testing.TB) {
	t.Helper()
	if !p.running() {
		t.Fatalf("%s is not running (exit: %v)\n%s", p.name, p.exitErr(), p.log())
	}
	c, err := net.DialTimeout("tcp", p.Addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s does not accept connections: %v", p.name, err)
	}
	c.Close()
}

func (p *proc) String() string { return fmt.Sprintf("%s(%s)", p.name, p.Addr) }
