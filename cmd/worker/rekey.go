package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/natsconn"
)

// worker rekey re-encrypts every proxy's credentials with the first
// credentials key. It is a subcommand rather than a flag of the serving
// worker: it is a one-off that ends, with an exit status saying whether
// every proxy is now sealed with that key, and a flag left in a
// deployment's configuration would run it again at every restart. It takes
// the worker's flags and variables, so it logs in as the worker role with
// the worker's keys; joined to a NATS deployment (--nats-url) it runs while
// the workers serve.

// newRekeyFlagSet is the worker's flags plus --rekey-concurrency.
func newRekeyFlagSet(cfg *config) *flag.FlagSet {
	fs := newFlagSet(cfg)
	fs.IntVar(&cfg.RekeyConcurrency, "rekey-concurrency", 32, "proxies rewritten at once")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: worker rekey [flags]\n\nRewrites every proxy whose credentials are not encrypted with the first credentials key\n(--credentials-key-file or PHAROX_CREDENTIALS_KEY), proxies stored in clear included, through\nthe revision-checked write every proxy change goes through: leases are never lost, acquires\ngo on. Give it the flags and variables of your workers; with --nats-url it runs while they\nserve. Exit status 0: every proxy is sealed with the first key; 1: some could not be\n(their key is missing, or the store failed).\n\n")
		printFlags(fs)
	}
	return fs
}

func rekeyMain(args []string) int {
	return subcommand("rekey", args, newRekeyFlagSet, config.validateRekey,
		func(ctx context.Context, cfg config, log *zap.Logger) error {
			_, err := runRekey(ctx, cfg, log, os.Stdout)
			if err != nil {
				log.Error("rekey incomplete", zap.Error(err))
			}
			return err
		})
}

// subcommand runs a worker subcommand: its flags and variables parsed and
// validated (exit status 2 and the reason on a bad one), a logger, a
// context that SIGINT and SIGTERM cancel, and run (exit status 1 and the
// reason if it fails).
func subcommand(name string, args []string, newFlags func(*config) *flag.FlagSet, validate func(config) error,
	run func(context.Context, config, *zap.Logger) error) int {
	cfg, err := parseWith(newFlags, args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && validate != nil {
		err = validate(cfg)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", name, err)
		return 2
	}
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", name, err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		fmt.Fprintf(os.Stderr, "worker %s: %v\n", name, err)
		return 1
	}
	return 0
}

func (c config) validateRekey() error {
	switch {
	case c.CredentialsKeyFile == "" && c.CredentialsKey == "":
		return fmt.Errorf("rekey needs the credentials keys, the new one first: --credentials-key-file FILE or %s", EnvCredentialsKey)
	case c.RekeyConcurrency < 1 || c.RekeyConcurrency > 1024:
		return fmt.Errorf("--rekey-concurrency must be 1..1024, got %d", c.RekeyConcurrency)
	}
	return nil
}

// runRekey connects as the worker does (starting the embedded server on
// --data-dir when there is no --nats-url: the worker must then be
// stopped), assembles a worker without a broker (its writes publish the
// events they owe, as any worker's), rewrites what needs it and prints a
// summary to out. Proxies left sealed with another key are an error.
func runRekey(ctx context.Context, cfg config, log *zap.Logger, out io.Writer) (manager.RekeyResult, error) {
	var res manager.RekeyResult
	natsSettings, err := cfg.NATS.Resolve()
	if err != nil {
		return res, err
	}
	if cfg.keys, err = credentialsKeys(cfg); err != nil {
		return res, err
	}
	var srv *server.Server
	if natsSettings.URL == "" {
		if srv, err = startEmbedded(cfg); err != nil {
			return res, fmt.Errorf("%w (with the embedded server, stop the worker first, or give --nats-url of the running one)", err)
		}
		defer stopEmbedded(srv)
	}
	nc, err := connect(natsSettings, srv, log, "pharox-worker-rekey")
	if err != nil {
		return res, err
	}
	defer nc.Close()

	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	wcfg := workerConfig(cfg, nc, nil, log)
	wcfg.Maintenance = true
	w, err := worker.Start(startCtx, wcfg)
	if err != nil {
		return res, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.RequestTimeout+5*time.Second)
		defer cancel()
		if err := w.Stop(sctx); err != nil {
			log.Warn("rekey: shutdown incomplete", zap.Error(err))
		}
	}()
	log.Info("rekey: started", zap.String("nats_url", natsconn.Redact(nc.ConnectedUrl())),
		zap.String("nats_login", natsSettings.Login), zap.String("credentials_keys", keysLog(cfg.keys)))

	start := time.Now()
	last := start
	res, err = w.Manager.RekeyCredentials(ctx, cfg.RekeyConcurrency, func(done, total int) {
		if now := time.Now(); now.Sub(last) >= 2*time.Second || done == total {
			last = now
			log.Info("rekey: progress", zap.Int("rewritten", done), zap.Int("to_rewrite", total))
		}
	})
	took := time.Since(start)
	log.Info("rekey: done", zap.Int("proxies", res.Proxies), zap.Int("rewritten", res.Rewritten), zap.Int("already_current", res.Current),
		zap.Int("deleted_meanwhile", res.Gone), zap.Int("unreadable", len(res.Unreadable)), zap.Int("passes", res.Passes),
		zap.Duration("took", took), zap.Error(err))
	if err != nil {
		return res, err
	}
	fmt.Fprintf(out, "rekey: %d proxies in %s: %d rewritten with key %s, %d already were, %d deleted meanwhile\n",
		res.Proxies, took.Round(time.Millisecond), res.Rewritten, cfg.keys.Primary(), res.Current, res.Gone)
	if n := len(res.Unreadable); n > 0 {
		return res, fmt.Errorf("%d proxies are sealed with a key not among these keys (%s) and were left as they are, e.g. %s: add that key to the file (after the first) and run rekey again",
			n, strings.Join(cfg.keys.IDs(), ", "), strings.Join(res.Unreadable[:min(n, 3)], ", "))
	}
	return res, nil
}
