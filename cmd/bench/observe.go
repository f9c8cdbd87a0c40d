package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/monitor"
	"github.com/pharox/pharox-nats/internal/periodic"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

// observeScenario is the number of the metrics and tracing cost scenario
// in --scenarios.
const observeScenario = 11

// observeRounds alternate the configurations this many times, so that the
// machine's drift over the run weighs on each alike.
const observeRounds = 4

// observeConfig is one way of running the worker in scenario 11.
type observeConfig struct {
	name    string
	metrics bool // a bound monitor, scraped every second
	tracing bool // a recording tracer provider, every span sampled, spans discarded
}

// runObserveScenario measures acquire+release pairs at 32 clients on one
// worker with metrics on (scraped as Prometheus would) and tracing off,
// against the same worker with both off, in alternating rounds on the same
// server and pool; and, for information, with tracing on as well.
func runObserveScenario(ctx context.Context, cfg benchConfig, rep *report) error {
	progress("scenario %d: the cost of metrics and tracing (%d alternating rounds)", observeScenario, observeRounds)
	e, err := newEnv(ctx, cfg, 0)
	if err != nil {
		return err
	}
	defer e.close()
	// A worker to seed the pool with, stopped before the measured ones.
	nc, err := nats.Connect(e.url)
	if err != nil {
		return err
	}
	w, err := worker.Start(ctx, benchWorker(nc, 10*time.Second))
	if err != nil {
		nc.Close()
		return err
	}
	pool, err := e.pool(1000, 1)
	stopWorker(w)
	nc.Close()
	if err != nil {
		return err
	}

	configs := []observeConfig{{name: "metrics off, tracing off"}, {name: "metrics on, tracing off", metrics: true},
		{name: "metrics on, tracing on (all sampled, spans discarded)", metrics: true, tracing: true}}
	totals := make([]pairRun, len(configs))
	started := time.Now()
	defer func() { rep.Seconds += time.Since(started).Seconds() }()
	for round := 0; round < observeRounds; round++ {
		// Each round starts with another configuration: none always runs
		// first (after a pause) or last.
		for k := range configs {
			i := (k + round) % len(configs)
			oc := configs[i]
			pr, err := observeRun(ctx, e, cfg, pool, oc)
			if err != nil {
				return fmt.Errorf("%s: %w", oc.name, err)
			}
			totals[i] = addRuns(totals[i], pr)
		}
	}
	const scn = "11 observe"
	base := totals[0].perSecond()
	for i, oc := range configs {
		pr := totals[i]
		if pr.OverLease {
			rep.OverLease = true
		}
		r := row{Scenario: scn, Case: oc.name + ", 32 clients", Value: pr.perSecond(), Unit: "pairs/s", CPU: pr.CPU.perOp(pr.Pairs),
			Note: fmt.Sprintf("%d pairs in %d rounds", pr.Pairs, observeRounds)}
		if i > 0 {
			r.Ratio, r.RatioOf = pr.perSecond()/base, "both off"
		}
		rep.Rows = append(rep.Rows, r)
		progress("  %s / %s: %.0f pairs/s", scn, r.Case, r.Value)
	}
	ratio := totals[1].perSecond() / base
	rep.Targets = append(rep.Targets, target{Name: "pairs/s with metrics on (tracing off) vs both off", Measured: ratio, Needed: 0.95, Met: ratio >= 0.95})
	return nil
}

// observeRun starts a worker configured as oc, runs pairs on it for the
// configured duration, and stops it.
func observeRun(ctx context.Context, e *env, cfg benchConfig, pool string, oc observeConfig) (pairRun, error) {
	nc, err := nats.Connect(e.url)
	if err != nil {
		return pairRun{}, err
	}
	defer nc.Close()
	wc := benchWorker(nc, 10*time.Second)
	var stopScrape func()
	if oc.metrics {
		mon := monitor.New()
		srv, err := monitor.Listen("127.0.0.1:0", mon, zap.NewNop())
		if err != nil {
			return pairRun{}, err
		}
		defer func() { _ = srv.Close(context.Background()) }()
		wc.Monitor = mon
		stopScrape = scrapeEvery(ctx, "http://"+srv.Addr()+"/metrics", time.Second)
	}
	if oc.tracing {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		wc.TracerProvider = tp
	}
	w, err := worker.Start(ctx, wc)
	if err != nil {
		return pairRun{}, err
	}
	defer stopWorker(w)
	pr := e.pairs(ctx, pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)})
	if stopScrape != nil {
		stopScrape()
	}
	return pr, nil
}

// scrapeEvery GETs url every interval, as Prometheus would, until the
// returned func is called.
func scrapeEvery(ctx context.Context, url string, interval time.Duration) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Run(ctx, interval, func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}()
	return func() { cancel(); <-done }
}

// addRuns adds two runs' pairs, time and CPU.
func addRuns(a, b pairRun) pairRun {
	a.Pairs += b.Pairs
	a.Empty += b.Empty
	a.Errors += b.Errors
	a.Seconds += b.Seconds
	a.OverLease = a.OverLease || b.OverLease
	if a.Pairs == b.Pairs { // a was empty
		a.CPU = b.CPU
	} else {
		a.CPU = cpuUse{server: a.CPU.server + b.CPU.server, bench: a.CPU.bench + b.CPU.bench, known: a.CPU.known && b.CPU.known}
	}
	return a
}
