package main

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startEmbedded starts the NATS server with JetStream that the worker runs
// on when no --nats-url is given.
func startEmbedded(cfg config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: port: %w", cfg.Listen, err)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "pharox-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		// Room for a 1 MiB proxies.add plus headers, so an oversize body
		// reaches the worker and gets the contract's 413.
		MaxPayload: 8 << 20,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start on %s (is the port in use?)", cfg.Listen)
	}
	return srv, nil
}

// stopEmbedded shuts the embedded server down and waits for it.
func stopEmbedded(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}
