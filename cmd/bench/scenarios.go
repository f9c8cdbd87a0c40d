package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/model"
)

const (
	prefix         = "pharox"
	serveWorkerArg = "__serve-worker"
	countries      = 50
)

// env is a NATS server with workers and client connections.
type env struct {
	proc    *natsProcess
	url     string
	workers []*worker.Worker
	wconns  []*nats.Conn
	conns   []*nats.Conn
	suffix  string
	seeded  map[string]bool
}

func newEnv(ctx context.Context, cfg benchConfig, workers int) (*env, error) {
	e := &env{url: cfg.natsURL, suffix: strconv.FormatInt(time.Now().UnixNano()%1e6, 36), seeded: map[string]bool{}}
	if e.url == "" {
		p, err := startNATSProcess()
		if err != nil {
			return nil, err
		}
		e.proc, e.url = p, p.url
	}
	for i := 0; i < workers; i++ {
		nc, err := nats.Connect(e.url)
		if err != nil {
			e.close()
			return nil, err
		}
		e.wconns = append(e.wconns, nc)
		w, err := worker.Start(ctx, benchWorker(nc, 10*time.Second))
		if err != nil {
			e.close()
			return nil, err
		}
		e.workers = append(e.workers, w)
	}
	for i := 0; i < 4; i++ {
		nc, err := nats.Connect(e.url)
		if err != nil {
			e.close()
			return nil, err
		}
		e.conns = append(e.conns, nc)
	}
	return e, nil
}

// benchWorker is a worker as cmd/worker runs one with its default flags
// (expiry sweeps every 5 s, health sweeps on, 1 s expiry grace), with a
// longer request timeout for the loaded scenarios.
func benchWorker(nc *nats.Conn, requestTimeout time.Duration) worker.Config {
	return worker.Config{Conn: nc, Prefix: prefix, RequestTimeout: requestTimeout,
		SweepInterval: 5 * time.Second, ExpiryGrace: time.Second, HealthSweeps: true}
}

func stopWorker(w *worker.Worker) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench: worker stop:", err)
	}
}

func (e *env) client() client {
	return client{nc: e.conns[0], prefix: prefix, timeout: 30 * time.Second}
}

// pool seeds a pool once and returns its name. Proxies carry one of 50
// countries and coordinates on a grid, so filters have something to select.
func (e *env) pool(size, maxConc int) (string, error) {
	name := fmt.Sprintf("bench-%d-%d-%s", size, maxConc, e.suffix)
	if e.seeded[name] {
		return name, nil
	}
	if err := seedPool(e.client(), name, size, benchProxy(maxConc)); err != nil {
		return "", err
	}
	e.seeded[name] = true
	return name, nil
}

// benchProxy is the i-th proxy of a bench pool: one of 50 countries, a
// coordinate on a grid, max_concurrency maxConc (0: none).
func benchProxy(maxConc int) func(i int) model.ProxyInput {
	return func(i int) model.ProxyInput {
		country := fmt.Sprintf("C%02d", i%countries)
		lat := float64(i%180) - 89.5
		lon := float64((i/180)%360) - 179.5
		in := model.ProxyInput{Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8000 + i%1000,
			Country: &country, Latitude: &lat, Longitude: &lon}
		if maxConc > 0 {
			in.MaxConcurrency = &maxConc
		}
		return in
	}
}

// floorRounds measures scenario 1's targets in cfg.rounds rounds, each
// running back to back the contract floor, one worker and two workers at 32
// clients; a ratio is taken within its round, and the targets get the
// medians. Runs minutes apart on this machine differ by up to 1.4x in
// pairs/s and CPU per pair for the same code (the floor too), so a ratio
// of two runs far apart says more about the machine than the code.
func floorRounds(ctx context.Context, cfg benchConfig, rep *report, add func(row), one *env, pool string, two *env, pool2 string) error {
	progress("scenario 1: %d rounds at 32 clients of contract floor, 1 worker, 2 workers", cfg.rounds)
	var vsFloor, workerCPU, twoVsOne []float64
	for r := 1; r <= cfg.rounds; r++ {
		floor, _, err := floorPairs(ctx, one.url, one.cpu, 32, cfg.duration, true)
		if err != nil {
			return fmt.Errorf("contract floor, round %d: %w", r, err)
		}
		spec := pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)}
		pr1 := one.pairs(ctx, spec)
		spec.acquire = simple(pool2, model.SelectorFirstAvailable)
		pr2 := two.pairs(ctx, spec)
		if pr1.OverLease || pr2.OverLease {
			rep.OverLease = true
		}
		vsFloor = append(vsFloor, pr1.perSecond()/floor)
		workerCPU = append(workerCPU, float64(pr1.CPU.bench.Microseconds())/float64(max(pr1.Pairs, 1)))
		note := fmt.Sprintf("floor %.0f pairs/s; 2 workers %.0f pairs/s", floor, pr2.perSecond())
		if pr1.CPU.known && pr2.CPU.known {
			ratio := (pr2.CPU.total() / float64(max(pr2.Pairs, 1))) / (pr1.CPU.total() / float64(max(pr1.Pairs, 1)))
			twoVsOne = append(twoVsOne, ratio)
			note += fmt.Sprintf(", %.2f x the total CPU per pair of 1 worker", ratio)
		}
		add(row{Scenario: "1 clients", Case: fmt.Sprintf("round %d of %d: 1 worker, 32 clients", r, cfg.rounds), Value: pr1.perSecond(), Unit: "pairs/s",
			Ratio: pr1.perSecond() / floor, RatioOf: "floor@32, same round", P50Ms: float64(pr1.P50) / 1e6, P99Ms: float64(pr1.P99) / 1e6,
			CPU: pr1.CPU.perOp(pr1.Pairs), Note: note})
	}
	rep.M.vsFloor, rep.M.workerCPU = ptr(median(vsFloor)), ptr(median(workerCPU))
	rep.M.rounds = cfg.rounds
	if len(twoVsOne) > 0 {
		rep.M.twoVsOne = ptr(median(twoVsOne))
	}
	return nil
}

// median of xs (not empty); xs is sorted in place.
func median(xs []float64) float64 {
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

// withConflicts notes on r how many revision-checked writes its workers
// lost to each other per pair.
func withConflicts(r row, conflicts uint64, pairs int64) row {
	r.Note += fmt.Sprintf(", %.2f conflicts per success", float64(conflicts)/float64(max(pairs, 1)))
	return r
}

func (e *env) conflicts() uint64 {
	var n uint64
	for _, w := range e.workers {
		n += w.Manager.Counters().Conflicts
	}
	return n
}

// newEnvWithPool is newEnv with a pool of size proxies seeded in it (see
// pool); the env is closed again when the seeding fails.
func newEnvWithPool(ctx context.Context, cfg benchConfig, workers, size, maxConc int) (*env, string, error) {
	e, err := newEnv(ctx, cfg, workers)
	if err != nil {
		return nil, "", err
	}
	pool, err := e.pool(size, maxConc)
	if err != nil {
		e.close()
		return nil, "", err
	}
	return e, pool, nil
}

func (e *env) close() {
	for _, w := range e.workers {
		stopWorker(w)
	}
	for _, nc := range append(e.wconns, e.conns...) {
		nc.Close()
	}
	if e.proc != nil {
		e.proc.stop()
	}
}

func (e *env) pairs(ctx context.Context, spec pairSpec) pairRun {
	spec.conns = e.conns
	spec.prefix = prefix
	if spec.timeline {
		spec.meter = e.cpu
	}
	before := e.cpu()
	pr := runPairs(ctx, spec)
	pr.CPU = e.cpu().sub(before)
	return pr
}

func simple(pool string, sel model.Selector) func(int) model.AcquireRequest {
	return func(i int) model.AcquireRequest {
		c := "client-" + strconv.Itoa(i)
		s := sel
		return model.AcquireRequest{PoolName: pool, ConsumerName: &c, Selector: &s}
	}
}

func run(ctx context.Context, cfg benchConfig) (report, error) {
	var rep report
	start := time.Now()
	add := func(r row) {
		rep.Rows = append(rep.Rows, r)
		progress("  %s / %s: %.0f %s", r.Scenario, r.Case, r.Value, r.Unit)
	}
	pairRow := func(scn, cs string, pr pairRun, base float64, baseName string) row {
		if pr.OverLease {
			rep.OverLease = true
		}
		note := fmt.Sprintf("%d pairs", pr.Pairs)
		if pr.Empty > 0 {
			note += fmt.Sprintf(", %d empty", pr.Empty)
		}
		if pr.Errors > 0 {
			note += fmt.Sprintf(", %d errors", pr.Errors)
		}
		return row{Scenario: scn, Case: cs, Value: pr.perSecond(), Unit: "pairs/s", Ratio: pr.perSecond() / base, RatioOf: baseName,
			P50Ms: float64(pr.P50) / 1e6, P99Ms: float64(pr.P99) / 1e6, CPU: pr.CPU.perOp(pr.Pairs), Note: note}
	}

	progress("baseline: raw JetStream KV get+CAS and request-reply on a separate-process server")
	main, err := newEnv(ctx, cfg, 1)
	if err != nil {
		return rep, err
	}
	defer main.close()
	bnc := main.conns[0]
	cas := map[int]float64{}
	for _, c := range []int{1, 32, 128} {
		before := main.cpu()
		v, err := baselineKVCAS(ctx, bnc, c, cfg.duration)
		if err != nil {
			return rep, fmt.Errorf("baseline kv cas: %w", err)
		}
		used := main.cpu().sub(before)
		cas[c] = v
		add(row{Scenario: "baseline", Case: fmt.Sprintf("kv get+CAS, %d goroutines", c), Value: v, Unit: "ops/s", CPU: used.perOp(int64(v * cfg.duration.Seconds()))})
	}
	before := main.cpu()
	rr32, err := baselineRequestReply(bnc, 32, cfg.duration)
	if err != nil {
		return rep, err
	}
	used := main.cpu().sub(before)
	add(row{Scenario: "baseline", Case: "request-reply, 32 requesters", Value: rr32, Unit: "req/s", CPU: used.perOp(int64(rr32 * cfg.duration.Seconds()))})
	casName := func(c int) string { return fmt.Sprintf("kv CAS@%d", c) }
	floor32, floorCPU, err := floorPairs(ctx, main.url, main.cpu, 32, cfg.duration, true)
	if err != nil {
		return rep, fmt.Errorf("contract floor: %w", err)
	}
	add(row{Scenario: "baseline", Case: "contract floor pairs, 32 clients", Value: floor32, Unit: "pairs/s", Ratio: floor32 / cas[32], RatioOf: casName(32),
		CPU: floorCPU.perOp(int64(floor32 * cfg.duration.Seconds())), Note: "2 req-reply + 2 CAS with the owed event in headers + 1 put + 2 events, no pharox code"})
	bare32, bareCPU, err := floorPairs(ctx, main.url, main.cpu, 32, cfg.duration, false)
	if err != nil {
		return rep, fmt.Errorf("contract floor without owed events: %w", err)
	}
	add(row{Scenario: "baseline", Case: "  the same, events not in the write's headers", Value: bare32, Unit: "pairs/s", Ratio: floor32 / bare32, RatioOf: "floor with / without",
		CPU: bareCPU.perOp(int64(bare32 * cfg.duration.Seconds())), Note: "what carrying events across a crash costs the floor"})

	if cfg.scenarios[1] {
		progress("scenario 1: acquire+release pairs, pool of 1,000 proxies (max_concurrency 1)")
		pool, err := main.pool(1000, 1)
		if err != nil {
			return rep, err
		}
		// sweep runs pairs on e's pool at 1, 32 and 128 clients; at32 sees
		// the run at 32.
		sweep := func(e *env, pool, workers string, at32 func(pairRun)) {
			for _, c := range []int{1, 32, 128} {
				before := e.conflicts()
				pr := e.pairs(ctx, pairSpec{clients: c, duration: cfg.duration, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)})
				add(withConflicts(pairRow("1 clients", fmt.Sprintf("%s, %d clients", workers, c), pr, cas[c], casName(c)), e.conflicts()-before, pr.Pairs))
				if c == 32 && at32 != nil {
					at32(pr)
				}
			}
		}
		sweep(main, pool, "1 worker", func(pr pairRun) {
			rep.Targets = append(rep.Targets, target{Name: "pairs/s at 32 clients vs raw get+CAS at 32", Measured: pr.perSecond() / cas[32], Needed: 0.35})
			add(row{Scenario: "1 clients", Case: "1 worker, 32 clients vs contract floor", Value: pr.perSecond(), Unit: "pairs/s", Ratio: pr.perSecond() / floor32, RatioOf: "floor@32"})
		})
		two, pool2, err := newEnvWithPool(ctx, cfg, 2, 1000, 1)
		if err != nil {
			return rep, err
		}
		sweep(two, pool2, "2 workers", nil)
		err = floorRounds(ctx, cfg, &rep, add, main, pool, two, pool2)
		two.close()
		if err != nil {
			return rep, err
		}
	}

	var bigRate float64
	if cfg.scenarios[2] || cfg.scenarios[3] {
		progress("scenario 2: pool size, 32 clients, first_available, no filters")
		var smallRate float64
		for _, size := range []int{100, 10000, cfg.big} {
			pool, err := main.pool(size, 1)
			if err != nil {
				return rep, err
			}
			pr := main.pairs(ctx, pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)})
			add(pairRow("2 pool size", fmt.Sprintf("%d proxies", size), pr, cas[32], casName(32)))
			if size == 100 {
				smallRate = pr.perSecond()
			}
			if size == cfg.big {
				bigRate = pr.perSecond()
				at0, atPos, err := listPages(main.client(), pool, 0, size/2)
				if err != nil {
					return rep, err
				}
				add(row{Scenario: "2 pool size", Case: fmt.Sprintf("admin.proxies.list page of 100 at %d", size/2), Value: atPos * 1000, Unit: "µs", Ratio: atPos / at0, RatioOf: "page at 0"})
				if rep.M.listPos < size/2 {
					rep.M.listAt0, rep.M.listAtPos, rep.M.listPos = ptr(at0), ptr(atPos), size/2
				}
			}
		}
		rep.Targets = append(rep.Targets, target{Name: fmt.Sprintf("%d-proxy pool vs 100-proxy pool", cfg.big), Measured: bigRate / smallRate, Needed: 0.9})
	}

	if cfg.scenarios[3] {
		progress("scenario 3: filtered acquire at %d proxies, 32 clients", cfg.big)
		pool, err := main.pool(cfg.big, 1)
		if err != nil {
			return rep, err
		}
		byCountry := func(i int) model.AcquireRequest {
			r := simple(pool, model.SelectorFirstAvailable)(i)
			c := fmt.Sprintf("C%02d", i%countries)
			r.Filters = &model.ProxyFilters{Country: &c}
			return r
		}
		pr := main.pairs(ctx, pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: byCountry})
		add(pairRow("3 filters", "country = one of 50", pr, bigRate, "unfiltered"))
		worst := pr.perSecond()
		byRadius := func(i int) model.AcquireRequest {
			r := simple(pool, model.SelectorFirstAvailable)(i)
			lat, lon, km := float64(i%60)-30, float64(i%90)-45, 500.0
			r.Filters = &model.ProxyFilters{Latitude: &lat, Longitude: &lon, RadiusKm: &km}
			return r
		}
		pr = main.pairs(ctx, pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: byRadius})
		add(pairRow("3 filters", "geo radius 500 km", pr, bigRate, "unfiltered"))
		worst = min(worst, pr.perSecond())
		if bigRate > 0 {
			rep.Targets = append(rep.Targets, target{Name: "filtered acquire vs unfiltered, big pool (worst)", Measured: worst / bigRate, Needed: 0.8})
		}
	}

	if cfg.scenarios[4] {
		progress("scenario 4: selectors, pool of 1,000, 32 clients")
		pool, err := main.pool(1000, 1)
		if err != nil {
			return rep, err
		}
		for _, sel := range []model.Selector{model.SelectorFirstAvailable, model.SelectorLeastUsed, model.SelectorRoundRobin, model.SelectorRandom} {
			pr := main.pairs(ctx, pairSpec{clients: 32, duration: cfg.duration, limit: 1, acquire: simple(pool, sel)})
			add(pairRow("4 selectors", string(sel), pr, cas[32], casName(32)))
		}
	}

	if cfg.scenarios[5] {
		progress("scenario 5: history, %d pairs on a 100-proxy pool, 32 clients", cfg.history)
		pool, err := main.pool(100, 0)
		if err != nil {
			return rep, err
		}
		done := make(chan struct{})
		go func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					progress("  history: %d leases granted so far", main.workers[0].Manager.Counters().Granted)
				}
			}
		}()
		pr := main.pairs(ctx, pairSpec{clients: 32, duration: time.Hour, maxPairs: int64(cfg.history), acquire: simple(pool, model.SelectorFirstAvailable), timeline: true})
		close(done)
		tl := pr.Timeline
		if len(tl) >= 20000 {
			first := 10000 / tl[9999].Seconds()
			last := 10000 / (tl[len(tl)-1] - tl[len(tl)-10001]).Seconds()
			add(row{Scenario: "5 history", Case: "first 10,000 pairs", Value: first, Unit: "pairs/s", Ratio: first / cas[32], RatioOf: casName(32)})
			add(row{Scenario: "5 history", Case: fmt.Sprintf("last 10,000 of %d", len(tl)), Value: last, Unit: "pairs/s", Ratio: last / first, RatioOf: "first 10,000"})
			rep.Targets = append(rep.Targets, target{Name: "last 10,000 pairs vs first 10,000", Measured: last / first, Needed: 0.9})
			series := per20k(tl)
			parts := make([]string, len(series))
			for i, v := range series {
				parts[i] = fmt.Sprintf("%.0f", v)
			}
			trend := trendRatio(series)
			add(row{Scenario: "5 history", Case: "pairs/s per 20,000, fitted end vs start", Value: trend * 100, Unit: "%", Note: strings.Join(parts, " ")})
			rep.M.lastFirst, rep.M.trend, rep.M.history = ptr(last/first), ptr(trend), len(tl)
			// The work per pair over the same runs of 20,000: a rate that
			// falls while the CPU per pair stays flat is the machine, not
			// something growing with the history.
			if cpu := cpuPer20k(tl, pr.CPUSamples); len(cpu) > 0 {
				parts, totals := make([]string, len(cpu)), make([]float64, len(cpu))
				for i, u := range cpu {
					parts[i] = u.perOp(20000)
					totals[i] = u.total() / 20000
				}
				add(row{Scenario: "5 history", Case: "CPU µs per pair per 20,000 (server+bench), fitted end vs start", Value: trendRatio(totals) * 100, Unit: "%", Note: strings.Join(parts, " ")})
			}
		}
	}

	if cfg.scenarios[6] {
		progress("scenario 6: hot pool, 50 proxies max_concurrency 1, 4 workers, 128 clients holding 5 ms")
		hot, pool, err := newEnvWithPool(ctx, cfg, 4, 50, 1)
		if err != nil {
			return rep, err
		}
		before := hot.conflicts()
		pr := hot.pairs(ctx, pairSpec{clients: 128, duration: cfg.duration, hold: 5 * time.Millisecond, limit: 1, acquire: simple(pool, model.SelectorFirstAvailable)})
		add(withConflicts(pairRow("6 hot pool", "successes", pr, cas[32], casName(32)), hot.conflicts()-before, pr.Pairs))
		hot.close()
	}

	if cfg.scenarios[7] {
		progress("scenario 7: worker memory with %d proxies (worker in its own process)", cfg.big)
		perProxy, steadyPer, heapPer, err := measureMemory(ctx, cfg)
		if err != nil {
			return rep, err
		}
		add(row{Scenario: "7 memory", Case: "worker RSS growth per proxy, right after loading", Value: perProxy, Unit: "bytes"})
		add(row{Scenario: "7 memory", Case: "worker RSS growth per proxy, freed pages returned", Value: steadyPer, Unit: "bytes"})
		add(row{Scenario: "7 memory", Case: "worker live heap per proxy", Value: heapPer, Unit: "bytes"})
		rep.Targets = append(rep.Targets, target{Name: "worker memory per proxy (RSS growth right after loading, bytes/1024)", Measured: perProxy / 1024, Needed: 1, Met: perProxy <= 1024})
		rep.M.rss, rep.M.rssProxies = ptr(perProxy), cfg.big
	}

	if cfg.scenarios[feedbackScenarioN] {
		targets, err := feedbackScenario(ctx, cfg, main, add, pairRow, cas[32])
		if err != nil {
			return rep, fmt.Errorf("scenario 9: %w", err)
		}
		rep.Targets = append(rep.Targets, targets...)
	}

	if cfg.scenarios[scaleScenarioN] {
		if err := scaleScenario(ctx, cfg, &rep, add); err != nil {
			return rep, fmt.Errorf("scenario 12: %w", err)
		}
	}

	for i := range rep.Targets {
		if !strings.HasPrefix(rep.Targets[i].Name, "worker memory") {
			rep.Targets[i].Met = rep.Targets[i].Measured >= rep.Targets[i].Needed
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// measureMemory runs a worker in a child process, loads the big pool into
// it and reads its resident set and live heap before and after.
func measureMemory(ctx context.Context, cfg benchConfig) (rssPerProxy, steadyPerProxy, heapPerProxy float64, err error) {
	e, err := newEnv(ctx, cfg, 0)
	if err != nil {
		return 0, 0, 0, err
	}
	defer e.close()
	cmd, err := startWorkerProcess(e.url)
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	rss0, heap0, err := childMemory(e, cmd.Process.Pid, "bench.memstats")
	if err != nil {
		return 0, 0, 0, err
	}
	pool, err := e.pool(cfg.big, 1)
	if err != nil {
		return 0, 0, 0, err
	}
	var st model.PoolStatsSnapshot
	if err := e.client().call("stats", model.StatsRequest{PoolName: pool}, &st); err != nil {
		return 0, 0, 0, err
	}
	rss1, heap1, err := childMemory(e, cmd.Process.Pid, "bench.memstats")
	if err != nil {
		return 0, 0, 0, err
	}
	// The runtime hands freed pages back to the OS on its own within
	// minutes; this asks for it now, to see the worker's steady state.
	rss2, _, err := childMemory(e, cmd.Process.Pid, "bench.scavenge")
	if err != nil {
		return 0, 0, 0, err
	}
	n := float64(st.TotalProxies)
	return float64(rss1-rss0) / n, float64(rss2-rss0) / n, float64(heap1-heap0) / n, nil
}

// startWorkerProcess starts a worker in a child process and returns once
// it serves (its replica loaded).
func startWorkerProcess(url string) (*exec.Cmd, error) {
	return startChild(exec.Command(os.Args[0], serveWorkerArg, url), "worker process")
}

// startChild starts cmd, a child of this binary that prints a line once it
// is ready, and waits for that line.
func startChild(cmd *exec.Cmd, what string) (*exec.Cmd, error) {
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%s did not start: %w", what, err)
	}
	return cmd, nil
}

// per20k is the pairs/s of each run of 20,000 pairs of a timeline.
func per20k(tl []time.Duration) []float64 {
	var out []float64
	var prev time.Duration
	for i := 19999; i < len(tl); i += 20000 {
		out = append(out, 20000/(tl[i]-prev).Seconds())
		prev = tl[i]
	}
	return out
}

// cpuPer20k is the CPU used by each run of 20,000 pairs of a timeline,
// interpolated between the samples taken around its ends.
func cpuPer20k(tl []time.Duration, samples []cpuSample) []cpuUse {
	if len(samples) == 0 {
		return nil
	}
	at := func(d time.Duration) cpuUse {
		i := sort.Search(len(samples), func(i int) bool { return samples[i].at >= d })
		if i == len(samples) {
			return samples[i-1].use
		}
		hi := samples[i]
		lo := cpuSample{use: cpuUse{known: hi.use.known}}
		if i > 0 {
			lo = samples[i-1]
		}
		if hi.at == lo.at {
			return hi.use
		}
		f := float64(d-lo.at) / float64(hi.at-lo.at)
		lerp := func(a, b time.Duration) time.Duration { return a + time.Duration(f*float64(b-a)) }
		return cpuUse{server: lerp(lo.use.server, hi.use.server), bench: lerp(lo.use.bench, hi.use.bench), known: hi.use.known}
	}
	var out []cpuUse
	var prev cpuUse
	prev.known = samples[0].use.known
	for i := 19999; i < len(tl); i += 20000 {
		u := at(tl[i])
		out = append(out, u.sub(prev))
		prev = u
	}
	return out
}

// childMemory asks the worker process for its live heap after a GC, then
// reads its resident set from /proc.
func childMemory(e *env, pid int, subject string) (rss, heap int64, err error) {
	msg, err := e.conns[0].Request(subject, nil, 30*time.Second)
	if err != nil {
		return 0, 0, fmt.Errorf("worker memstats: %w", err)
	}
	heap, _ = strconv.ParseInt(string(msg.Data), 10, 64)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, heap, nil
		}
	}
	return 0, heap, fmt.Errorf("no VmRSS for pid %d", pid)
}

// serveWorker is the worker child of the memory scenario.
func serveWorker(url string) {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	stopProfile := profileLoad(os.Getenv(workerLoadProfileEnv))
	w, err := worker.Start(ctx, benchWorker(nc, 30*time.Second))
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
	_, _ = nc.Subscribe("bench.memstats", func(m *nats.Msg) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = m.Respond([]byte(strconv.FormatUint(ms.HeapAlloc, 10)))
	})
	_, _ = nc.Subscribe("bench.scavenge", func(m *nats.Msg) {
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = m.Respond([]byte(strconv.FormatUint(ms.HeapAlloc, 10)))
	})
	_ = nc.Flush()
	fmt.Println("ready")
	<-ctx.Done()
	stopWorker(w)
	nc.Close()
}

// workerLoadProfileEnv names a file for a CPU profile of the worker child
// process from its start until it serves (its replica's load), as in
// PHAROX_BENCH_WORKER_LOAD_PROFILE=/tmp/load.prof go run ./cmd/bench
// --scenarios 12 --proxies 1000000.
const workerLoadProfileEnv = "PHAROX_BENCH_WORKER_LOAD_PROFILE"

// profileLoad starts a CPU profile into path ("" for none) and returns
// what stops it.
func profileLoad(path string) (stop func()) {
	stop, err := startProfile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker: load profile:", err)
		return func() {}
	}
	return stop
}
