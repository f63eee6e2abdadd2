// Package testpg starts throwaway PostgreSQL servers (initdb + postgres on a
// free loopback port in a temporary directory) for tests, the way testredis
// starts redis-server. When initdb or postgres is not installed the test is
// skipped, except under CI=true, where it fails: CI must test against a real
// PostgreSQL. Running as root (CI containers), the server runs as the
// "postgres" (or "nobody") user: PostgreSQL refuses to run as root.
package testpg

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/testredis"
)

// Server is a running PostgreSQL with a database named "tollgate".
type Server struct {
	Port int
	dir  string
	bin  string // directory of initdb and postgres
	cmd  *exec.Cmd
	cred *syscall.Credential
	log  string
}

// URL is a postgres:// URL of the server's "tollgate" database.
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/tollgate?sslmode=disable", s.Port)
}

// DatabaseURL is a URL of another database on the server (see CreateDatabase).
func (s *Server) DatabaseURL(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

func lookBins(t testing.TB) string {
	t.Helper()
	missing := func(err error) string {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL (initdb, postgres) not installed (required under CI): %v", err)
		}
		t.Skip("PostgreSQL (initdb, postgres) not installed; skipping (set CI=true to make this fatal)")
		return ""
	}
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		// Debian installs them off PATH.
		if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
			initdb = m[len(m)-1]
		} else {
			return missing(err)
		}
	}
	if real, err := filepath.EvalSymlinks(initdb); err == nil {
		initdb = real
	}
	dir := filepath.Dir(initdb)
	if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
		return missing(err)
	}
	return dir
}

// Start initialises and starts a PostgreSQL for the test and stops it at
// cleanup. The database "tollgate" exists, empty.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{bin: lookBins(t)}
	dir, err := os.MkdirTemp("", "testpg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		s.cred = unprivileged(t)
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.log = filepath.Join(dir, "log")
	initdb := exec.Command(filepath.Join(s.bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Port = testredis.FreePort(t)
	s.start(t)
	t.Cleanup(s.Stop)
	s.CreateDatabase(t, "tollgate")
	return s
}

func unprivileged(t testing.TB) *syscall.Credential {
	t.Helper()
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	t.Fatal("testpg: running as root and no postgres or nobody user to run PostgreSQL as")
	return nil
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command(filepath.Join(s.bin, "postgres"), "-D", filepath.Join(s.dir, "data"),
		"-p", strconv.Itoa(s.Port), "-k", s.dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting postgres: %v", err)
	}
	if err := s.waitReady(15 * time.Second); err != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		out, _ := os.ReadFile(s.log)
		t.Fatalf("postgres on port %d: %v\n%s", s.Port, err, out)
	}
}

// waitReady waits until the server accepts a query (psql-free: a startup
// message answered with ReadyForQuery would need a driver, so it retries a
// connection through the pg_isready binary when present, else the port).
func (s *Server) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	isready := filepath.Join(s.bin, "pg_isready")
	_, statErr := os.Stat(isready)
	for {
		var err error
		if statErr == nil {
			var out []byte
			out, err = exec.Command(isready, "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "-t", "1").CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
			}
		} else {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.Port), 200*time.Millisecond); err == nil {
				c.Close()
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CreateDatabase creates an empty database on the server.
func (s *Server) CreateDatabase(t testing.TB, name string) {
	t.Helper()
	psql := filepath.Join(s.bin, "psql")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for i := 0; i < 50; i++ { // "the database system is starting up" is answered before ready on some versions
		var out []byte
		out, err = exec.CommandContext(ctx, psql, "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres",
			"-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", `CREATE DATABASE "`+name+`"`).CombinedOutput()
		if err == nil {
			return
		}
		err = fmt.Errorf("%v: %s", err, out)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("creating database %s: %v", name, err)
}

// Stop shuts the server down (SIGINT, PostgreSQL's fast shutdown: sessions
// are cut, transactions in flight abort, committed data stays). Safe to call
// twice.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
		s.cmd = nil
	}
}

// Restart starts a stopped server again on the same port, with its data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t)
}
