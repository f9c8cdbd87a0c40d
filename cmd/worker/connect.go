package main

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// connect opens the worker's NATS connection: to the embedded server srv
// in-process, or else to --nats-url with --nats-creds. It reconnects
// forever and logs losing and regaining the server; worker.Start makes it
// log the errors NATS reports asynchronously (a slow consumer).
func connect(cfg config, srv *server.Server, log *zap.Logger) (*nats.Conn, error) {
	url := cfg.NATSURL
	opts := []nats.Option{
		nats.Name("pharox-worker"),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil && !nc.IsClosed() {
				log.Warn("NATS connection lost; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
	}
	if srv != nil {
		url = srv.ClientURL()
		opts = append(opts, nats.InProcessServer(srv))
	} else if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}
