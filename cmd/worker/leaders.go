package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/natsconn"
)

// worker spread-leaders spreads the leaders of the shards' proxies streams
// over the cluster's nodes, as a worker does when it starts
// (kvstore.SpreadLeaders), and prints where they are: for an operator after
// a node came back, without restarting a worker. It takes the worker's
// flags and variables (it logs in as the worker role), needs --nats-url,
// and runs while the workers serve.

// spreadLeadersTimeout bounds the placement; longer than a worker's start
// gives it, since nobody waits to be served.
const spreadLeadersTimeout = 20 * time.Second

func newSpreadLeadersFlagSet(cfg *config) *flag.FlagSet {
	fs := newFlagSet(cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: worker spread-leaders [flags]\n\nPuts the leaders of the shards' proxies streams (KV_PHAROX_PROXIES_<i>) on different nodes of the\nNATS cluster with leader step-downs, as every worker does when it starts, and prints where they\nare. Give it the flags and variables of your workers (--nats-url, --shards, the login); it runs\nwhile they serve. Exit status 0: the leaders are spread (or there is nothing to spread); 1: they\ncould not be, or another worker is placing them now.\n\n")
		printFlags(fs)
	}
	return fs
}

func spreadLeadersMain(args []string) int {
	return subcommand("spread-leaders", args, newSpreadLeadersFlagSet, nil,
		func(ctx context.Context, cfg config, log *zap.Logger) error {
			p, err := runSpreadLeaders(ctx, cfg, log, os.Stdout)
			if err == nil && !p.Balanced {
				err = errors.New("the leaders are not spread over the nodes (see above)")
			}
			return err
		})
}

// runSpreadLeaders connects as the worker does, opens the store (creating
// missing buckets, like a worker), spreads the leaders and prints the
// placement to out.
func runSpreadLeaders(ctx context.Context, cfg config, log *zap.Logger, out io.Writer) (kvstore.Placement, error) {
	var p kvstore.Placement
	natsSettings, err := cfg.NATS.Resolve()
	if err != nil {
		return p, err
	}
	if natsSettings.URL == "" {
		return p, errors.New("needs --nats-url (or PHAROX_NATS_URL) of the cluster: an embedded server has no leaders to spread")
	}
	nc, err := connect(natsSettings, nil, log, "pharox-worker-spread-leaders")
	if err != nil {
		return p, err
	}
	defer nc.Close()
	octx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	store, err := kvstore.Open(octx, nc, kvstore.WithReplicas(cfg.Replicas), kvstore.WithShards(cfg.Shards), kvstore.WithLogger(log.Named("kvstore")))
	if err != nil {
		return p, err
	}
	log.Info("spread-leaders: started", zap.String("nats_url", natsconn.Redact(nc.ConnectedUrl())), zap.Int("shards", store.Shards()))
	sctx, cancel := context.WithTimeout(ctx, spreadLeadersTimeout)
	defer cancel()
	p, err = store.SpreadLeaders(sctx)
	for i, st := range p.Streams {
		leader := p.Leaders[i]
		if leader == "" {
			leader = "(no leader)"
		}
		fmt.Fprintf(out, "%s\t%s\n", st, leader)
	}
	switch {
	case p.Skipped != "":
		fmt.Fprintf(out, "nothing moved: %s\n", p.Skipped)
	default:
		moved := "nothing moved"
		if len(p.Moved) > 0 {
			moved = "moved " + strings.Join(p.Moved, ", ")
		}
		state := "spread"
		if !p.Balanced {
			state = "NOT spread"
		}
		fmt.Fprintf(out, "%s: %s (%d step-downs in %s)\n", state, moved, p.StepDowns, p.Took.Round(time.Millisecond))
	}
	log.Info("spread-leaders: done", zap.Strings("leaders", p.Leaders), zap.Strings("moved", p.Moved), zap.Int("step_downs", p.StepDowns),
		zap.Bool("spread", p.Balanced), zap.String("skipped", p.Skipped), zap.Duration("took", p.Took), zap.Error(err))
	if err == nil && p.Skipped != "" && !p.Balanced {
		err = fmt.Errorf("another worker is placing the leaders now (%s): try again in a moment", p.Skipped)
	}
	return p, err
}
