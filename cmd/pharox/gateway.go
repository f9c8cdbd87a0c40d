package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/gateway"
	"github.com/pharox/pharox-nats/internal/monitor/endpoint"
)

func (a *app) gatewayCmd() *cobra.Command {
	var cfg gateway.Config
	cmd := &cobra.Command{
		Use:   "gateway [flags]",
		Short: "Serve an HTTP and SOCKS5 proxy that leases an upstream proxy per request",
		Long: `Serve an HTTP proxy (plain HTTP forwarding and CONNECT tunnels) and, with
--socks-listen, a SOCKS5 proxy. Each request, tunnel or SOCKS5 connection
leases a proxy from a pool and goes through it in its own protocol; with
session=ID in the username, requests share one lease (a sticky session).

Clients authenticate with Basic proxy credentials (SOCKS5: username/password):
the username is the lease request, comma-separated key=value pairs such as
pool=latam,country=AR,session=checkout1,sesstime=600; the password is one of
the gateway's tokens (--token-file or ` + gateway.TokensEnv + `). Keys: pool,
consumer, country, city, source, isp, asn, protocol, selector, session,
sesstime, wait. A value holding ",", "=" or "%" is percent-encoded.

Without tokens the gateway asks for no credentials and listens on loopback
only. SIGTERM stops accepting, lets tunnels finish up to --drain-timeout and
releases every lease it holds.`,
		Example: `  pharox gateway --listen 127.0.0.1:8080 --token-file tokens.txt
  curl -x http://pool=scrapers,country=AR:TOKEN@127.0.0.1:8080 https://example.com/`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.ApplyEnv(cmd.Flags(), a.getenv); err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(a.getenv); err != nil {
				return usageError{err}
			}
			tokens, err := cfg.LoadTokens(a.getenv)
			if err != nil {
				return usageError{err}
			}
			return a.serveGateway(cmd.Context(), cfg, tokens)
		},
	}
	cfg.AddFlags(cmd.Flags())
	return cmd
}

// serveGateway runs the gateway until ctx ends (SIGINT, SIGTERM), then
// drains it.
func (a *app) serveGateway(ctx context.Context, cfg gateway.Config, tokens *gateway.Tokens) error {
	log, err := a.logger(cfg.LogLevel)
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()
	opts := []nats.Option{nats.Name("pharox-gateway"), nats.Timeout(cfg.RequestTimeout), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS connection lost; reconnecting", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", zap.String("url", redactURL(nc.ConnectedUrl())))
		})}
	settings, err := a.nats.Resolve()
	if err != nil {
		return err
	}
	nc, err := settings.Connect(opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := client.New(nc, client.WithPrefix(a.prefix), client.WithTimeout(cfg.RequestTimeout))
	g, err := gateway.New(gateway.NewClientLeaser(c), cfg.Options(tokens, log)...)
	if err != nil {
		return usageError{err}
	}

	var draining atomic.Bool
	metrics := "off"
	if cfg.MetricsOn() {
		msrv, err := gatewayMetrics(cfg.MetricsListen, g, nc, &draining, log)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		metrics = msrv.Addr()
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = msrv.Close(ctx)
		}()
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			_ = ln.Close()
			return usageError{fmt.Errorf("--tls-cert/--tls-key: %w", err)}
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	}
	var sln net.Listener
	if cfg.SOCKSListen != "" {
		if sln, err = net.Listen("tcp", cfg.SOCKSListen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("--socks-listen: %w", err)
		}
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- g.ServeHTTPProxy(ln) }()
	socks := ""
	if sln != nil {
		socks = sln.Addr().String()
		go func() { serveErr <- g.ServeSOCKS5(sln) }()
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	log.Info("pharox gateway listening",
		zap.String("http", ln.Addr().String()), zap.String("scheme", scheme), zap.String("socks5", socks),
		zap.String("metrics", metrics), zap.Int("tokens", tokens.Len()), zap.String("pool", cfg.Pool), zap.String("consumer", cfg.Consumer),
		zap.String("nats_url", nc.ConnectedUrlRedacted()), zap.String("subject_prefix", a.prefix),
		zap.Bool("contract_v1_1", gateway.ContractV11))

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, gateway.ErrClosed) {
			runErr = err
		}
	}
	draining.Store(true)
	log.Info("shutting down: draining tunnels", zap.Duration("drain_timeout", cfg.DrainTimeout))
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := g.Shutdown(dctx); err != nil {
		log.Warn("drain timeout: tunnels still open were closed", zap.Error(err))
	}
	if sln != nil {
		_ = sln.Close()
	}
	log.Info("gateway stopped")
	return runErr
}

// gatewayMetrics serves the gateway's metrics, with the Go runtime's and
// the process's, on addr: /metrics, /healthz, and /readyz (503 while the
// NATS connection is down or the gateway drains).
func gatewayMetrics(addr string, g *gateway.Gateway, nc *nats.Conn, draining *atomic.Bool, log *zap.Logger) (*endpoint.Server, error) {
	proc := prometheus.NewRegistry()
	proc.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return endpoint.Listen(addr, endpoint.Config{
		Gatherer: prometheus.Gatherers{g.Gatherer(), proc},
		Ready: func(context.Context) error {
			if draining.Load() {
				return errors.New("draining: the gateway is stopping")
			}
			if st := nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("NATS connection is %s", st)
			}
			return nil
		},
	}, log.Named("metrics"))
}

// logger writes JSON lines to stderr at level.
func (a *app) logger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.Lock(zapcore.AddSync(a.stderr)), lvl)
	return zap.New(core), nil
}
