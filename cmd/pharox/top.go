package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// topOptions are pharox top's flags.
type topOptions struct {
	pools    []string
	interval time.Duration
	window   time.Duration
}

// TopPool is one pool's row of pharox top, and of its --json snapshot.
type TopPool struct {
	model.PoolStatsSnapshot
	// Acquired and NoneFree are the acquires granted and found nothing free
	// in the window, from the events stream; the rates are per second.
	Acquired          int     `json:"acquired"`
	NoneFree          int     `json:"none_free"`
	AcquiresPerSecond float64 `json:"acquires_per_second"`
	NoneFreePerSecond float64 `json:"none_free_per_second"`
	WindowSeconds     float64 `json:"window_seconds"`
}

// TopSnapshot is what pharox top --json prints.
type TopSnapshot struct {
	CollectedAt time.Time `json:"collected_at"`
	Pools       []TopPool `json:"pools"`
}

func (a *app) topCmd() *cobra.Command {
	var o topOptions
	cmd := &cobra.Command{
		Use:   "top [--pool POOL]...",
		Short: "Watch every pool live: proxies, available, leased, cooling, leases, acquires/s and none-free/s",
		Long: `top redraws a table of the pools every --interval, from pharox.stats and the
events stream (acquires per second over the last --window, whichever worker
answered them). q quits. Without --pool it lists the pools
(pharox.admin.pools.list, the admin role); a leaser names them with --pool.
With --json it prints one snapshot and exits; its rates count the events
of the last --window.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.interval < 100*time.Millisecond {
				return usageErrorf("--interval must be at least 100ms, got %s", o.interval)
			}
			if o.window < time.Second {
				return usageErrorf("--window must be at least 1s, got %s", o.window)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			r := newRates(o.window)
			sub, err := c.SubscribeEvents(ctx, r.add, client.WithReplaySince(time.Now().Add(-o.window)))
			if err != nil {
				return err
			}
			defer sub.Stop()
			if a.jsonOut {
				if err := a.waitReplay(ctx, r, o.window); err != nil {
					return err
				}
				snap, err := a.topSnapshot(ctx, c, r, o)
				if err != nil {
					return err
				}
				return a.printJSON(snap)
			}
			return a.runTop(ctx, c, r, o)
		},
	}
	cmd.Flags().StringSliceVarP(&o.pools, "pool", "p", nil, "pool to show (repeat or comma-separate; default: every pool)")
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "how often the view is redrawn")
	cmd.Flags().DurationVar(&o.window, "window", 10*time.Second, "the rates are averaged over this long")
	return cmd
}

// waitReplay waits until the replay of the window has delivered every
// event the stream held when it started, so a snapshot's counts are whole.
func (a *app) waitReplay(ctx context.Context, r *rates, window time.Duration) error {
	js, err := jetstream.New(a.nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	stream, err := js.Stream(ctx, client.EventStream)
	if err != nil {
		return fmt.Errorf("events stream %s: %w", client.EventStream, err)
	}
	state := stream.CachedInfo().State
	if state.Msgs == 0 || state.LastTime.Before(time.Now().Add(-window)) {
		return nil // no event in the window
	}
	for {
		seq, grew := r.sequence()
		if seq >= state.LastSeq {
			return nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return fmt.Errorf("replaying the events of the last %s: %w", window, ctx.Err())
		}
	}
}

// topSnapshot reads every pool's statistics and rates now.
func (a *app) topSnapshot(ctx context.Context, c *client.Client, r *rates, o topOptions) (TopSnapshot, error) {
	names := o.pools
	if len(names) == 0 {
		pools, err := c.ListPools(ctx)
		if err != nil {
			return TopSnapshot{}, fmt.Errorf("list pools (give --pool to name them instead): %w", err)
		}
		for _, p := range pools {
			names = append(names, p.Name)
		}
	}
	now := time.Now()
	snap := TopSnapshot{CollectedAt: now.UTC(), Pools: []TopPool{}}
	for _, name := range names {
		st, err := c.Stats(ctx, name)
		if errors.Is(err, client.ErrPoolNotFound) && len(o.pools) == 0 {
			continue // deleted since the list
		}
		if err != nil {
			return TopSnapshot{}, err
		}
		granted, noneFree := r.counts(name, now)
		secs := o.window.Seconds()
		snap.Pools = append(snap.Pools, TopPool{PoolStatsSnapshot: st, Acquired: granted, NoneFree: noneFree,
			AcquiresPerSecond: float64(granted) / secs, NoneFreePerSecond: float64(noneFree) / secs, WindowSeconds: secs})
	}
	slices.SortFunc(snap.Pools, func(x, y TopPool) int {
		if x.PoolName < y.PoolName {
			return -1
		}
		if x.PoolName > y.PoolName {
			return 1
		}
		return 0
	})
	return snap, nil
}
