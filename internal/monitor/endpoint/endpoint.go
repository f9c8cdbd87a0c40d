// Package endpoint serves Prometheus metrics and the liveness and readiness
// probes on one HTTP listener. It knows nothing of what it serves: the
// worker's monitor (internal/monitor) and the gateway each bring their own
// registry, so a program that serves the gateway's metrics links none of
// the worker's collectors.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Config is what a listener serves.
type Config struct {
	// Gatherer is served on /metrics (Prometheus text or OpenMetrics).
	Gatherer prometheus.Gatherer
	// Ready, if set, answers /readyz: nil is 200, an error 503 with the
	// reason. Without it there is no /readyz.
	Ready func(context.Context) error
}

// Server serves /metrics, /healthz (the process is alive: always 200) and,
// when configured, /readyz.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr now (so a taken port fails the start) and serves cfg
// on it until Close.
func Listen(addr string, cfg Config, log *zap.Logger) (*Server, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("metrics listener: no gatherer")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		// A collector that fails (the replica lag read, say) leaves its
		// metric out; the rest of the scrape is served.
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	if cfg.Ready != nil {
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if err := cfg.Ready(r.Context()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "not ready:", err)
				return
			}
			fmt.Fprintln(w, "ready")
		})
	}
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// Addr is the address the listener is bound to (with the port chosen for
// ":0").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the listener, letting requests in progress finish until ctx
// ends.
func (s *Server) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }
