package main

import (
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/natsconn"
)

// connect opens one of the worker's NATS connections (name says which):
// to the embedded server srv in-process, or else to the resolved
// --nats-url with its login. It reconnects forever and logs losing and
// regaining the server (the URL redacted); worker.Start makes it log the
// errors NATS reports asynchronously (a slow consumer).
func connect(s natsconn.Settings, srv *server.Server, log *zap.Logger, name string) (*nats.Conn, error) {
	url := s.URL
	log = log.With(zap.String("connection", name))
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil && !nc.IsClosed() {
				log.Warn("NATS connection lost; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", zap.String("url", natsconn.Redact(nc.ConnectedUrl())))
		}),
	}
	if srv != nil {
		// In-process: no TLS even when the listener has it, so not tls://.
		url = strings.Replace(srv.ClientURL(), "tls://", "nats://", 1)
		opts = append(opts, nats.InProcessServer(srv))
	}
	nc, err := nats.Connect(url, append(opts, s.Options()...)...)
	if err != nil {
		return nil, s.ConnectError(url, err)
	}
	return nc, nil
}
