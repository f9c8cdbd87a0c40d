package monitor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Server serves a monitor over HTTP: /metrics (Prometheus text or
// OpenMetrics), /healthz (the process is alive: always 200) and /readyz
// (200 when Ready, else 503 with the reason).
type Server struct {
	ln  net.Listener
	srv *http.Server
	log *zap.Logger
}

// Listen binds addr now (so a taken port fails the start) and serves mon
// on it until Close.
func Listen(addr string, mon *Monitor, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(mon.reg, promhttp.HandlerOpts{
		// A collector that fails (the replica lag read, say) leaves its
		// metric out; the rest of the scrape is served.
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := mon.Ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s := &Server{ln: ln, log: log, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
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
