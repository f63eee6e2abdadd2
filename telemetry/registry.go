package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Registry holds one process's metric families.
type Registry struct {
	reg         *prometheus.Registry
	storeErrors prometheus.Counter
}

// New returns a Registry with the Go runtime and process collectors and
// tollgate_store_errors_total registered.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_store_errors_total",
		Help: "Redis commands that failed (unreachable, timed out, or refused by the server).",
	})
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), r.storeErrors)
	return r
}

// Gatherer is the registry, for tests and custom exposition.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the registry's metrics in the Prometheus exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg, ErrorHandling: promhttp.ContinueOnError})
}

// LeaseCredits registers tollgate_lease_credits, read from leased (in
// milli-credits) at each scrape.
func (r *Registry) LeaseCredits(leased func() int64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_lease_credits",
		Help: "Credits this replica holds leased from the accounts' balances (free, held by calls in flight, and charged but not yet applied).",
	}, func() float64 { return credits(leased()) }))
}

// credits converts milli-credits to credits for exposition: the nearest
// float64, which Prometheus's text format prints with its three decimals.
func credits(mc int64) float64 { return float64(mc) / 1000 }

// Off is the metrics address that turns metrics off.
const Off = "off"

// Server serves a Registry on its own listener.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr for /metrics. A taken address is an error, as for the
// main listener.
func (r *Registry) Listen(addr string, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "metrics are at /metrics", http.StatusNotFound)
	})
	srv := &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second,
	}
	if log != nil {
		srv.ErrorLog = zap.NewStdLog(log.Named("metrics"))
	}
	return &Server{srv: srv, ln: ln}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
