package main

import (
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startEmbedded starts the NATS server with JetStream that the worker runs
// on when no --nats-url is given, with the options of --nats-config and the
// flags (embeddedOptions).
func startEmbedded(cfg config) (*server.Server, error) {
	opts, err := embeddedOptions(cfg)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start on %s:%d (is the port in use?)", opts.Host, opts.Port)
	}
	return srv, nil
}

// stopEmbedded shuts the embedded server down and waits for it.
func stopEmbedded(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// listenOf is the embedded server's address (from --listen or
// --nats-config), with the port it really got.
func listenOf(srv *server.Server) string {
	if srv == nil {
		return ""
	}
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		return ""
	}
	return u.Host
}

// dataDirOf is the embedded server's store dir (the server keeps its files
// in a jetstream directory under it).
func dataDirOf(srv *server.Server) string {
	if srv == nil {
		return ""
	}
	return filepath.Dir(srv.JetStreamConfig().StoreDir)
}
