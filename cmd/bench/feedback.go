package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// feedbackScenarioN is the feedback scenario's number.
const feedbackScenarioN = 9

// feedbackScenario is scenario 9, the v1.1 feedback features on the large
// pool, each beside first_available unfiltered on the same pool in the
// same run, measured in alternating rounds:
//
//   - lowest_latency with a tenth of the pool measured (health results
//     applied through admin.health.apply): the measured ones come first;
//   - first_available and lowest_latency with a tenth of the pool cooling
//     down (cooldown_until an hour ahead, set through admin.proxies.update,
//     every tenth proxy in added order): cooling proxies are out of the
//     selection indexes, so this should cost what the plain pool costs;
//   - pairs whose release reports a failure (on a pool without cooldown, so
//     nothing cools): the price of recording the outcome.
func feedbackScenario(ctx context.Context, cfg benchConfig, e *env, add func(row),
	pairRow func(scn, cs string, pr pairRun, base float64, baseName string) row, cas32 float64) ([]target, error) {
	progress("scenario 9: feedback on the %d-proxy pool, 32 clients", cfg.big)
	pool, err := e.pool(cfg.big, 1)
	if err != nil {
		return nil, err
	}
	const scn = "9 feedback"
	spec := func(sel model.Selector) pairSpec {
		return pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: simple(pool, sel)}
	}
	ids, err := proxyIDs(e.client(), pool)
	if err != nil {
		return nil, err
	}
	var measured, cooling []string
	for i, id := range ids {
		switch i % 10 {
		case 3:
			measured = append(measured, id)
		case 9:
			cooling = append(cooling, id)
		}
	}
	started := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	lat := make(map[string]float64, len(measured))
	for _, id := range measured {
		lat[id] = float64(5 + rng.IntN(2000))
	}
	if err := forEach(ctx, e, measured, func(c client, id string) error {
		return c.call("admin.health.apply", model.HealthApplyRequest{ProxyID: id, Status: model.ProxyActive,
			LatencyMs: lat[id], Protocol: model.ProtocolHTTP}, nil)
	}); err != nil {
		return nil, fmt.Errorf("apply latencies: %w", err)
	}
	progress("  %d latencies applied (%.1fs)", len(measured), time.Since(started).Seconds())

	// The pool with and without cooling is measured in alternating rounds
	// (cooldowns set, measured, ended, ...), each figure the sum of its
	// rounds, so that drift and bursts of load on a shared machine fall on
	// both sides alike.
	cool := func(until model.Optional[string]) error {
		return forEach(ctx, e, cooling, func(c client, id string) error {
			return c.call("admin.proxies.update", model.ProxyUpdateRequest{ProxyID: id, CooldownUntil: until}, nil)
		})
	}
	const rounds = 3
	round := cfg.duration / 2
	var plain, fastest, cooled, fastestCooled []pairRun
	for r := 0; r < rounds; r++ {
		one := func(sel model.Selector) pairRun {
			sp := spec(sel)
			sp.duration = round
			return e.pairs(ctx, sp)
		}
		plain = append(plain, one(model.SelectorFirstAvailable))
		fastest = append(fastest, one(model.SelectorLowestLatency))
		started := time.Now()
		if err := cool(model.Some(time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))); err != nil {
			return nil, fmt.Errorf("set cooldowns: %w", err)
		}
		var st model.PoolStatsSnapshot
		if err := e.client().call("stats", model.StatsRequest{PoolName: pool}, &st); err != nil {
			return nil, err
		}
		if st.CoolingProxies != len(cooling) {
			return nil, fmt.Errorf("stats say %d proxies cooling, %d were set", st.CoolingProxies, len(cooling))
		}
		progress("  round %d: %d proxies cooling (%.1fs)", r+1, st.CoolingProxies, time.Since(started).Seconds())
		cooled = append(cooled, one(model.SelectorFirstAvailable))
		fastestCooled = append(fastestCooled, one(model.SelectorLowestLatency))
		if err := cool(model.Null[string]()); err != nil {
			return nil, fmt.Errorf("end cooldowns: %w", err)
		}
	}
	failing := spec(model.SelectorFirstAvailable)
	failing.release = func(id string) model.ReleaseRequest { return model.ReleaseFailure(id, "bench") }
	failed := e.pairs(ctx, failing)

	base := sumRuns(plain)
	rate := base.perSecond()
	const baseName = "first_available"
	add(pairRow(scn, fmt.Sprintf("first_available, %d proxies, %d rounds", cfg.big, rounds), base, cas32, "kv CAS@32"))
	add(pairRow(scn, "lowest_latency, 10% measured", sumRuns(fastest), rate, baseName))
	add(pairRow(scn, "first_available, 10% cooling", sumRuns(cooled), rate, baseName))
	add(pairRow(scn, "lowest_latency, 10% measured, 10% cooling", sumRuns(fastestCooled), rate, baseName))
	add(pairRow(scn, "first_available, releases report failure", failed, rate, baseName))
	return []target{
		{Name: fmt.Sprintf("%d-proxy pool with 10%% cooling vs without", cfg.big), Measured: sumRuns(cooled).perSecond() / rate, Needed: 0.9},
		{Name: "lowest_latency vs first_available, big pool", Measured: sumRuns(fastest).perSecond() / rate, Needed: 0.9},
	}, nil
}

// sumRuns adds runs up; the percentiles are the last run's.
func sumRuns(runs []pairRun) pairRun {
	var s pairRun
	for i, r := range runs {
		s.Pairs += r.Pairs
		s.Empty += r.Empty
		s.Errors += r.Errors
		s.Seconds += r.Seconds
		s.OverLease = s.OverLease || r.OverLease
		if i == 0 {
			s.CPU = r.CPU
		} else {
			s.CPU.server += r.CPU.server
			s.CPU.bench += r.CPU.bench
			s.CPU.known = s.CPU.known && r.CPU.known
		}
		s.P50, s.P99 = r.P50, r.P99
	}
	return s
}

// proxyIDs lists a pool's proxy ids in added order.
func proxyIDs(c client, pool string) ([]string, error) {
	var ids []string
	limit := model.MaxListLimit
	req := model.ProxiesListRequest{PoolName: pool, Limit: &limit}
	for {
		var page model.ProxiesPage
		if err := c.call("admin.proxies.list", req, &page); err != nil {
			return nil, err
		}
		for _, p := range page.Proxies {
			ids = append(ids, p.ID)
		}
		if page.NextCursor == nil {
			return ids, nil
		}
		req.Cursor = page.NextCursor
	}
}

// forEach runs fn on every id from 32 goroutines over the env's client
// connections, and returns the first error.
func forEach(ctx context.Context, e *env, ids []string, fn func(client, string) error) error {
	work := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client{nc: e.conns[g%len(e.conns)], prefix: prefix, timeout: 30 * time.Second}
			for id := range work {
				if err := fn(c, id); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		work <- id
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(errs) > 0 {
		return errors.Join(errs[0], fmt.Errorf("%d of %d failed", len(errs), len(ids)))
	}
	return nil
}
