package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// scaleScenarioN is the scale scenario: one pool of --proxies proxies.
const scaleScenarioN = 12

// scaleScenario seeds one pool of cfg.proxies proxies on a server of its
// own, then measures a fresh worker (in a child process) loading it: the
// time until it serves and its resident set; then acquire latency with one
// client for every selector, and list pages at the start of the pool and
// half-way through. After the random selector it rewrites as many random
// proxies of the pool with raw KV get+update, and one proxy as many times,
// with no pharox code: random picks write keys whose latest message sits
// in a message block the server has not cached, and the server loads that
// whole block to check the write's expected revision; the raw rows show
// what that costs the server alone.
func scaleScenario(ctx context.Context, cfg benchConfig, rep *report, add func(row)) error {
	n := cfg.proxies
	scn := "12 scale"
	progress("scenario 12: one pool of %d proxies", n)
	e, err := newEnv(ctx, cfg, 1)
	if err != nil {
		return err
	}
	defer e.close()
	// With --nats-url the pool stays on the server between runs: seeding a
	// million proxies takes minutes.
	pool := fmt.Sprintf("bench-scale-%d", n)
	var st model.PoolStatsSnapshot
	if err := e.client().call("stats", model.StatsRequest{PoolName: pool}, &st); err != nil || st.TotalProxies < n {
		if err == nil {
			return fmt.Errorf("pool %s holds %d proxies, fewer than %d: delete it", pool, st.TotalProxies, n)
		}
		seedStart := time.Now()
		if err := seedPool(e.client(), pool, n, benchProxy(1)); err != nil {
			return err
		}
		add(row{Scenario: scn, Case: fmt.Sprintf("seed %d proxies (admin.proxies.add, 2 at once)", n), Value: float64(n) / time.Since(seedStart).Seconds(), Unit: "proxies/s"})
	}

	t0 := time.Now()
	cmd, err := startWorkerProcess(e.url)
	if err != nil {
		return err
	}
	load := time.Since(t0).Seconds()
	rss, err := processRSS(cmd.Process.Pid)
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	if err != nil {
		return err
	}
	srvRSS := int64(0)
	if e.proc != nil {
		srvRSS, _ = processRSS(e.proc.cmd.Process.Pid)
	}
	add(row{Scenario: scn, Case: "fresh worker: start until serving (replica loaded)", Value: load * 1000, Unit: "ms"})
	add(row{Scenario: scn, Case: "fresh worker: RSS once serving", Value: float64(rss) / (1 << 20), Unit: "MB", Note: fmt.Sprintf("%.0f B per proxy", float64(rss)/float64(n))})
	if srvRSS > 0 {
		add(row{Scenario: scn, Case: "nats-server RSS", Value: float64(srvRSS) / (1 << 20), Unit: "MB"})
	}
	rep.M.scaleN, rep.M.loadSeconds, rep.M.loadRSSMB = n, ptr(load), ptr(float64(rss)/(1<<20))
	if srvRSS > 0 {
		rep.M.serverRSSMB = ptr(float64(srvRSS) / (1 << 20))
	}

	rep.M.selectorP99 = map[string]float64{}
	if cfg.scaleProf != "" {
		f, err := os.Create(cfg.scaleProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for _, sel := range []model.Selector{model.SelectorFirstAvailable, model.SelectorLeastUsed, model.SelectorRoundRobin, model.SelectorRandom, model.SelectorLowestLatency} {
		if cfg.selectors != "" && !strings.Contains(","+cfg.selectors+",", ","+string(sel)+",") {
			continue
		}
		if sel == model.SelectorRandom {
			// Random picks write keys spread over every message block of
			// the pool's stream; start it, and the raw KV rows it is
			// compared with, from the same state: blocks uncached.
			time.Sleep(blockCacheIdle)
		}
		gcBefore := gcCycles()
		pr := e.pairs(ctx, pairSpec{clients: 1, duration: cfg.duration, limit: 1, acquire: simple(pool, sel)})
		if pr.OverLease {
			rep.OverLease = true
		}
		p99 := float64(pr.AcqP99) / 1e6
		rep.M.selectorP99[string(sel)] = p99
		// The worker's heap holds the million proxies: a GC cycle marks
		// all of it, and whichever selector it falls on pays for it.
		add(row{Scenario: scn, Case: "acquire, 1 client, " + string(sel), Value: pr.perSecond(), Unit: "pairs/s",
			P50Ms: float64(pr.AcqP50) / 1e6, P99Ms: p99, CPU: pr.CPU.perOp(pr.Pairs),
			Note: fmt.Sprintf("acquire latency; %d pairs, %d errors; %d GC cycles of the bench process", pr.Pairs, pr.Errors, gcCycles()-gcBefore)})
		if sel == model.SelectorRandom && pr.Pairs > 0 {
			cold, err := coldKeyRows(ctx, e, pool, n, int(pr.Pairs), add)
			if err != nil {
				return fmt.Errorf("raw KV baseline: %w", err)
			}
			rep.M.randomRawP99 = ptr(durMs(cold.P99))
		}
	}

	pos := min(500000, n/2)
	at0, atPos, err := listPages(e.client(), pool, 0, pos)
	if err != nil {
		return err
	}
	add(row{Scenario: scn, Case: "admin.proxies.list page of 100 at 0", Value: at0 * 1000, Unit: "µs"})
	add(row{Scenario: scn, Case: fmt.Sprintf("admin.proxies.list page of 100 at %d", pos), Value: atPos * 1000, Unit: "µs", Ratio: atPos / at0, RatioOf: "page at 0"})
	if rep.M.listPos < pos {
		rep.M.listAt0, rep.M.listAtPos, rep.M.listPos = ptr(at0), ptr(atPos), pos
	}
	return nil
}

// listPages times admin.proxies.list pages of 100 starting at two positions
// of the pool's added order (the cursor is the added order of the proxy
// before the page), medians of 21 calls each, in ms.
func listPages(c client, pool string, a, b int) (float64, float64, error) {
	page := func(pos int) (float64, error) {
		limit := 100
		req := model.ProxiesListRequest{PoolName: pool, Limit: &limit}
		if pos > 0 {
			cur := strconv.Itoa(pos)
			req.Cursor = &cur
		}
		var times []float64
		for i := 0; i < 22; i++ {
			var p model.ProxiesPage
			t := time.Now()
			if err := c.call("admin.proxies.list", req, &p); err != nil {
				return 0, err
			}
			if i > 0 { // the first warms up
				times = append(times, float64(time.Since(t).Microseconds())/1000)
			}
			if len(p.Proxies) != limit {
				return 0, fmt.Errorf("list page at %d: %d proxies, want %d", pos, len(p.Proxies), limit)
			}
		}
		sort.Float64s(times)
		return times[len(times)/2], nil
	}
	x, err := page(a)
	if err != nil {
		return 0, 0, err
	}
	y, err := page(b)
	return x, y, err
}

// gcCycles is how many GC cycles the bench process (clients and the
// in-process worker) has completed.
func gcCycles() uint32 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.NumGC
}

// processRSS reads a process's resident set from /proc, in bytes.
func processRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
