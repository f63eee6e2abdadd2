// Package testredis starts throwaway redis-server processes on free loopback
// ports for tests. When redis-server is not installed the test is skipped,
// except under CI=true, where it fails: CI must test against a real Redis.
package testredis

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	Addr string // host:port on 127.0.0.1
	cmd  *exec.Cmd
	dir  string
	args []string
}

// URL is the redis:// URL of the server's database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Client returns a new client for the server, closed at the end of the test.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, PoolSize: 64, MaxRetries: 2, DialerRetries: 1, DialerRetryTimeout: 10 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start starts a redis-server for the test and stops it at cleanup.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not installed (required under CI): %v", err)
		}
		t.Skip("redis-server not installed; skipping (set CI=true to make this fatal)")
	}
	s := &Server{dir: t.TempDir()}
	port := FreePort(t)
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	s.args = append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--protected-mode", "no", "--loglevel", "warning",
	}, extraArgs...)
	s.start(t, bin)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start(t testing.TB, bin string) {
	t.Helper()
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Dir = s.dir
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	if err := waitReady(s.Addr, 10*time.Second); err != nil {
		_ = s.cmd.Process.Kill()
		t.Fatalf("redis-server on %s: %v", s.Addr, err)
	}
}

// Stop kills the server (as a crash would). Safe to call twice.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts a stopped server again on the same port (empty: nothing is persisted).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	bin, _ := exec.LookPath("redis-server")
	s.start(t, bin)
}

func waitReady(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if err := ping(addr); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// FreePort returns a loopback TCP port that was free a moment ago. It is
// drawn at random from below the kernel's ephemeral range, where neither an
// outgoing connection's source port nor a ":0" listener ever lands: a port
// handed out by the kernel (the old way) could be taken by any client socket
// of a parallel test before the process meant for it bound it. What is left
// is two tests drawing the same port, about one chance in 20,000.
func FreePort(t testing.TB) int {
	t.Helper()
	lo := ephemeralLow()
	for range 200 {
		p := portFloor + rand.IntN(lo-portFloor)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			return p
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// portFloor is the lowest port FreePort draws: above the well-known services.
const portFloor = 12000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// 32768 elsewhere or when unreadable).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > portFloor+1000 {
				return n
			}
		}
	}
	return 32768
}

// Flush empties the server's database (between subtests).
func (s *Server) Flush(t testing.TB) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("flushing redis: %v", err)
	}
}

// Dir is the server's working directory.
func (s *Server) Dir() string { return filepath.Clean(s.dir) }

// Cluster is a Redis Cluster of three masters (no replicas) on loopback.
type Cluster struct {
	Nodes []*Server
}

// Addrs are the masters' addresses: the seed list for a cluster client.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Client returns a new cluster client, closed at the end of the test.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), PoolSize: 64, MaxRetries: 2})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Flush empties every master (between subtests).
func (c *Cluster) Flush(t testing.TB) {
	t.Helper()
	for _, n := range c.Nodes {
		n.Flush(t)
	}
}

// StartCluster starts three cluster-enabled redis-servers, joins them with
// `redis-cli --cluster create … --cluster-replicas 0`, waits until every node
// reports cluster_state:ok, and stops them at cleanup. It skips (fails under
// CI=true) when redis-server or redis-cli is missing.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-cli not installed (required under CI): %v", err)
		}
		t.Skip("redis-cli not installed; skipping (set CI=true to make this fatal)")
	}
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		// The cluster bus port is chosen too: the default (port + 10000) may
		// be taken or past 65535.
		c.Nodes = append(c.Nodes, Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--cluster-port", strconv.Itoa(FreePort(t))))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		for {
			err := clusterReady(n.Addr, len(c.Nodes))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis cluster not ready: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// clusterReady reports whether the node at addr sees a healthy cluster of n
// masters covering every slot.
func clusterReady(addr string, n int) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	for _, want := range []string{"cluster_state:ok", "cluster_slots_ok:16384", "cluster_known_nodes:" + strconv.Itoa(n)} {
		if !strings.Contains(info, want) {
			return fmt.Errorf("%s: CLUSTER INFO lacks %q", addr, want)
		}
	}
	return nil
}
