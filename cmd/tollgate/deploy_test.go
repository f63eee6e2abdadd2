package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tollgate/tollgate/internal/config"
)

const deployDir = "../../deploy"

// checkArgs runs the real flag parser of the command on args (with -h
// appended: a valid command line ends in flag.ErrHelp, without Redis).
// A --metrics-addr must name the default metrics port of its process.
func checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("%s: no command", where)
	}
	switch args[0] {
	case "proxy", "billing":
	default:
		t.Fatalf("%s: command %q is not proxy or billing", where, args[0])
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--metrics-addr" {
			port := args[i+1][strings.LastIndexByte(args[i+1], ':')+1:]
			if want := map[string]string{"proxy": "9464", "billing": "9465"}[args[0]]; port != want {
				t.Errorf("%s: metrics port %s, want %s", where, port, want)
			}
		}
	}
	kept := args
	var out bytes.Buffer
	if err := run(context.Background(), append(kept, "-h"), &out, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("%s: %q is not a valid command line: %v\n%s", where, args, err, out.String())
	}
	for i, a := range kept {
		if a == "--config" && (i+1 >= len(kept) || !strings.HasPrefix(kept[i+1], "/etc/tollgate/")) {
			t.Errorf("%s: --config must name the file under /etc/tollgate", where)
		}
	}
}

func readYAMLDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err.Error() == "EOF" {
				return docs
			}
			t.Fatalf("%s: %v", path, err)
		}
		if m != nil {
			docs = append(docs, m)
		}
	}
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestProductionConfig: the example loads and validates with the real loader.
func TestProductionConfig(t *testing.T) {
	for _, k := range []string{"REDIS_URL", "OPENAI_API_KEY", "TOLLGATE_ADMIN_TOKEN"} {
		t.Setenv(k, "")
	}
	t.Setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
	cfg, err := config.Load("../../configs/examples/production.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.DrainTimeout.D()+finalApplyTimeout > 30e9 {
		t.Errorf("drain %s + final apply %s do not fit a 30s grace period", cfg.Proxy.DrainTimeout.D(), finalApplyTimeout)
	}
}

// TestDeploySystemd: ExecStart runs a real command line, ExecReload sends SIGHUP, hardening is on.
func TestDeploySystemd(t *testing.T) {
	for _, name := range []string{"tollgate-proxy.service", "tollgate-billing.service"} {
		path := filepath.Join(deployDir, "systemd", name)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		keys := map[string]string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				keys[k] = v
			}
		}
		f.Close()
		fields := strings.Fields(keys["ExecStart"])
		if len(fields) < 2 || fields[0] != "/usr/local/bin/tollgate" {
			t.Fatalf("%s: ExecStart %q", name, keys["ExecStart"])
		}
		checkArgs(t, name, fields[1:])
		if !strings.Contains(keys["ExecReload"], "-HUP $MAINPID") {
			t.Errorf("%s: ExecReload %q does not send SIGHUP", name, keys["ExecReload"])
		}
		for _, k := range []string{"NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "User"} {
			if keys[k] == "" {
				t.Errorf("%s: %s is not set", name, k)
			}
		}
	}
}

// TestDeployDockerfile: static build, distroless non-root, the real command.
func TestDeployDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"CGO_ENABLED=0", "distroless/static", "USER nonroot", "-X main.version="} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "CMD "); ok {
			var args []string
			if err := yaml.Unmarshal([]byte(rest), &args); err != nil {
				t.Fatalf("CMD %s: %v", rest, err)
			}
			checkArgs(t, "Dockerfile CMD", args)
		}
		if rest, ok := strings.CutPrefix(line, "COPY configs/"); ok {
			if _, err := os.Stat("../../configs/" + strings.Fields(rest)[0]); err != nil {
				t.Errorf("Dockerfile copies a missing file: %v", err)
			}
		}
	}
}

// TestDeployCompose: Redis with AOF and noeviction, PostgreSQL, two proxy
// replicas, billing, Prometheus; every tollgate command line is real.
func TestDeployCompose(t *testing.T) {
	docs := readYAMLDocs(t, filepath.Join(deployDir, "docker-compose.yml"))
	services := docs[0]["services"].(map[string]any)
	for _, want := range []string{"redis", "postgres", "proxy-1", "proxy-2", "billing", "prometheus"} {
		if services[want] == nil {
			t.Errorf("no %s service", want)
		}
	}
	redis := strings.Join(strs(services["redis"].(map[string]any)["command"]), " ")
	if !strings.Contains(redis, "--appendonly yes") || !strings.Contains(redis, "--maxmemory-policy noeviction") {
		t.Errorf("redis: %s", redis)
	}
	for _, name := range []string{"proxy-1", "proxy-2", "billing"} {
		checkArgs(t, "compose "+name, strs(services[name].(map[string]any)["command"]))
	}
	prom := readYAMLDocs(t, filepath.Join(deployDir, "prometheus.yml"))
	text, _ := yaml.Marshal(prom)
	for _, target := range []string{"proxy-1:9464", "proxy-2:9464", "billing:9465"} {
		if !bytes.Contains(text, []byte(target)) {
			t.Errorf("prometheus.yml does not scrape %s", target)
		}
	}
}

// TestDeployKubernetes: Deployments with the real args, probes on the paths
// the servers serve, resource requests, a PDB, a ServiceMonitor, a Secret.
func TestDeployKubernetes(t *testing.T) {
	kinds := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.yaml"))
	for _, f := range files {
		for _, d := range readYAMLDocs(t, f) {
			kind := d["kind"].(string)
			kinds[kind]++
			if kind != "Deployment" {
				continue
			}
			spec := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			if g, _ := spec["terminationGracePeriodSeconds"].(int); g < 30 {
				t.Errorf("%s: terminationGracePeriodSeconds %d", f, g)
			}
			c := spec["containers"].([]any)[0].(map[string]any)
			args := strs(c["args"])
			checkArgs(t, f, args)
			ports := map[string]int{}
			for _, p := range c["ports"].([]any) {
				pm := p.(map[string]any)
				ports[pm["name"].(string)] = pm["containerPort"].(int)
			}
			wantHTTP := map[string]int{"proxy": 8080, "billing": 8081}[args[0]]
			if ports["http"] != wantHTTP || !strings.Contains(strings.Join(args, " "), "--addr 0.0.0.0:"+itoa(wantHTTP)) {
				t.Errorf("%s: http port %d, args %v", f, ports["http"], args)
			}
			for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
				got := c[probe].(map[string]any)["httpGet"].(map[string]any)["path"]
				if got != path {
					t.Errorf("%s: %s path %v, want %s (what the server serves)", f, probe, got, path)
				}
			}
			if c["resources"].(map[string]any)["requests"] == nil {
				t.Errorf("%s: no resource requests", f)
			}
			if c["envFrom"] == nil {
				t.Errorf("%s: secrets not mounted", f)
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in deploy/kubernetes", k)
		}
	}
	if kinds["Deployment"] != 2 {
		t.Errorf("%d Deployments, want proxy and billing", kinds["Deployment"])
	}
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
