package monitor

import (
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/monitor/endpoint"
)

// Server serves a monitor over HTTP: /metrics (Prometheus text or
// OpenMetrics), /healthz (the process is alive: always 200) and /readyz
// (200 when Ready, else 503 with the reason).
type Server = endpoint.Server

// Listen binds addr now (so a taken port fails the start) and serves mon
// on it until Close.
func Listen(addr string, mon *Monitor, log *zap.Logger) (*Server, error) {
	return endpoint.Listen(addr, endpoint.Config{Gatherer: mon.reg, Ready: mon.Ready}, log)
}
