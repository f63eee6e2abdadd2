package soak

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildDir  string // removed by TestMain
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// repoRoot is the module root (the tests run in test/soak).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from the test directory: %v", err)
	}
	return root
}

// tollgateBinary builds ./cmd/tollgate once per test run (with -race when the
// tests run with it) and returns its path. TOLLGATE_SOAK_BIN overrides it.
func tollgateBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TOLLGATE_SOAK_BIN"); p != "" {
		return p
	}
	root := repoRoot(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "tollgate-soak-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "tollgate")
		args := []string{"build", "-o", binPath}
		if raceEnabled && os.Getenv("TOLLGATE_SOAK_RACE") != "0" {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/tollgate")
		cmd := exec.Command(goTool(), args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %v: %w\n%s", args, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building tollgate: %v", buildErr)
	}
	return binPath
}

// goTool is the go command: $GOROOT/bin/go when `go test` set GOROOT (it
// does), else the one on $PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}
