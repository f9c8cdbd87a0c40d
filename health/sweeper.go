package health

import (
	"context"
	"errors"
	"hash/fnv"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// Sweeps.
//
// Every worker runs Sweep. Time is cut, per proxy, into slots of its pool's
// interval_seconds, shifted by a phase derived from the proxy id (the same
// on every worker), so a pool's proxies fall due spread evenly over the
// interval instead of all at once. When a proxy's slot starts, each worker
// waits a small jitter of its own and then tries to claim the slot: a KV
// Create of "<proxy id>.<slot>" in PHAROX_HEALTH_CLAIMS with a per-key TTL
// (two intervals and 2 s: longer than any worker may still try that slot).
// One Create succeeds; that worker probes the proxy, the others see
// ErrKeyExists and move on. So each proxy is probed at most once per slot
// whatever the number of workers, and a worker that crashes holds no more
// than the slots it had claimed: the next slot has a new key, and the old
// keys lapse. A worker running late (short of CPU or of probe slots) still
// tries a slot until the next one ends, then gives it up; a worker that is
// still busy with a proxy does not start that proxy's next slot.

// target is one proxy due for sweeps, with its pool's settings.
type target struct {
	proxy     model.Proxy
	opts      model.HealthCheckOptions
	interval  time.Duration
	phase     time.Duration // phaseOf(proxy.ID, interval)
	threshold int
}

type job struct {
	target
	slot int64
}

type lastSlot struct {
	slot     int64
	interval time.Duration
}

// Sweep probes this worker's share of the proxies of every pool whose
// health_check is enabled, until ctx ends; then it waits for the probes in
// flight (a probe cut short by ctx is not recorded). Banned proxies are not
// probed.
func (c *Checker) Sweep(ctx context.Context) {
	// Each due proxy gets a goroutine of its own for its claim, probe and
	// writes; the probes among them take turns on the worker's probe slots
	// (--health-concurrency), the KV writes do not wait behind probes. At
	// most dispatchLimit are under way at once.
	dispatch := make(chan struct{}, c.dispatchLimit())
	var inflight sync.Map // proxy id -> struct{}: under way, not scheduled again until done
	var wg sync.WaitGroup
	defer wg.Wait()

	// The list of proxies is read apart, so that a slow read never holds
	// back the schedule.
	var latest atomic.Pointer[[]target]
	wg.Add(1)
	go func() {
		defer wg.Done()
		warned := map[string]string{}
		for {
			if t, err := c.inventory(ctx, warned); err == nil {
				latest.Store(&t)
			} else if ctx.Err() == nil {
				c.warn("health sweep: reading pools and proxies failed; keeping the last list", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.opts.refresh):
			}
		}
	}()

	var targets []target
	var current *[]target
	last := map[string]lastSlot{}
	tick := time.NewTicker(c.opts.tick)
	defer tick.Stop()
	for {
		if l := latest.Load(); l != current {
			current, targets = l, *l
			keep := make(map[string]bool, len(targets))
			for _, x := range targets {
				keep[x.proxy.ID] = true
			}
			for id := range last {
				if !keep[id] {
					delete(last, id)
				}
			}
		}
		now := time.Now()
		for _, t := range targets {
			id := t.proxy.ID
			slot, start := slotOf(t.interval, t.phase, now)
			prev, seen := last[id]
			if seen && prev.interval == t.interval && prev.slot >= slot {
				continue
			}
			if !seen && now.Sub(start) > t.interval/2 {
				// First sight late in the slot (a worker that just started):
				// wait for the next slot rather than bunch up with others.
				last[id] = lastSlot{slot, t.interval}
				continue
			}
			if now.Before(start.Add(c.jitter(id, slot, t.interval))) {
				continue
			}
			if _, busy := inflight.Load(id); busy {
				continue // still busy with the previous slot: try again next tick
			}
			select {
			case dispatch <- struct{}{}:
			default:
				continue // as many under way as allowed: try again next tick
			}
			inflight.Store(id, struct{}{})
			last[id] = lastSlot{slot, t.interval}
			wg.Add(1)
			go func(j job) {
				defer func() {
					inflight.Delete(j.proxy.ID)
					<-dispatch
					wg.Done()
				}()
				c.sweepOne(ctx, j)
			}(job{target: t, slot: slot})
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sweepOne claims a job's slot and, when this worker won it, probes the
// proxy and records the result.
func (c *Checker) sweepOne(ctx context.Context, j job) {
	if ctx.Err() != nil {
		return
	}
	if slot, _ := slotOf(j.interval, j.phase, time.Now()); slot > j.slot+1 {
		return // waited a whole interval past its slot: the next ones are scheduled anyway
	}
	// The claim is not cut short by ctx: a Create the server applied but
	// whose answer was abandoned would hold the slot for nobody.
	ttl := claimTTL(j.interval)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	rev, won, err := c.claims.claim(cctx, j.proxy.ID, j.slot, ttl, c.id)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			c.warn("health sweep: claim failed; the proxy waits for its next slot", zap.String("proxy_id", j.proxy.ID), zap.Error(err))
		}
		return
	}
	if !won {
		return
	}
	if res, ok := c.probe(ctx, j.proxy, j.opts); ok {
		c.finish(ctx, j, res)
		return
	}
	// Stopping before the probe had a result (which would say nothing about
	// the proxy): give the slot back, so a worker that has not tried it yet
	// may still take it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.writeTimeout)
	defer cancel()
	_ = c.claims.release(rctx, j.proxy.ID, j.slot, rev, ttl)
}

// finish reports and records a sweep's probe.
func (c *Checker) finish(ctx context.Context, j job, res model.HealthCheckResult) {
	c.callHook(ProbeInfo{Worker: c.id, ProxyID: j.proxy.ID, Slot: j.slot, SlotStart: slotStart(j.interval, j.phase, j.slot), Result: res})
	// The probe is done: record it even if shutdown starts meanwhile.
	if _, err := c.record(context.WithoutCancel(ctx), j.proxy, res, j.threshold); err != nil &&
		!errors.Is(err, model.ErrProxyNotFound) {
		c.warn("health sweep: result not recorded", zap.String("proxy_id", j.proxy.ID), zap.Error(err))
	}
	c.log.Debug("health probe", zap.String("proxy_id", j.proxy.ID), zap.String("status", string(res.Status)),
		zap.Float64("latency_ms", res.LatencyMs), zap.Int64("slot", j.slot))
}

// inventory lists the proxies due for sweeps. Pools whose options cannot be
// used are skipped with one warning per pool and problem.
func (c *Checker) inventory(ctx context.Context, warned map[string]string) ([]target, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pools, err := c.m.ListPools(lctx)
	if err != nil {
		return nil, err
	}
	var out []target
	for _, p := range pools {
		hc := p.HealthCheck
		if hc == nil || !hc.Enabled || !(hc.IntervalSeconds > 0) {
			delete(warned, p.Name)
			continue
		}
		opts, err := Resolve(hc, nil)
		if err != nil {
			if warned[p.Name] != err.Error() {
				c.log.Warn("health sweep: pool skipped", zap.String("pool", p.Name), zap.Error(err))
				warned[p.Name] = err.Error()
			}
			continue
		}
		delete(warned, p.Name)
		interval := time.Duration(hc.IntervalSeconds * float64(time.Second))
		var cursor *string
		for {
			// Proxies this worker cannot decrypt are probed by workers that can.
			page, err := c.m.ListReadableProxies(lctx, model.ProxiesListRequest{PoolName: p.Name, Limit: ptr(model.MaxListLimit), Cursor: cursor})
			if errors.Is(err, model.ErrPoolNotFound) {
				break
			}
			if err != nil {
				return nil, err
			}
			for _, px := range page.Proxies {
				if px.Status == model.ProxyBanned {
					continue
				}
				out = append(out, target{proxy: px, opts: opts, interval: interval, phase: phaseOf(px.ID, interval), threshold: hc.FailureThreshold})
			}
			if page.NextCursor == nil {
				break
			}
			cursor = page.NextCursor
		}
	}
	return out, nil
}

// slotOf returns the number of a proxy's interval slot at t and when that
// slot started. Slots are shifted by the proxy's phase (phaseOf, the same on
// every worker).
func slotOf(interval, phase time.Duration, t time.Time) (int64, time.Time) {
	iv := max(int64(interval), 1)
	n := t.UnixNano() - int64(phase)
	slot := n / iv
	if n < 0 && n%iv != 0 {
		slot--
	}
	return slot, slotStart(interval, phase, slot)
}

// slotStart is when slot number slot of a proxy with that phase begins.
func slotStart(interval, phase time.Duration, slot int64) time.Time {
	return time.Unix(0, slot*max(int64(interval), 1)+int64(phase))
}

// phaseOf is the proxy's shift of its slots within the interval.
func phaseOf(proxyID string, interval time.Duration) time.Duration {
	return time.Duration(hash(proxyID) % uint64(max(int64(interval), 1)))
}

// jitter is this worker's delay after a slot starts before it tries to
// claim it: up to a tenth of the interval, at most 250 ms; stable for a
// given (worker, proxy, slot), different across workers.
func (c *Checker) jitter(proxyID string, slot int64, interval time.Duration) time.Duration {
	span := min(interval/10, 250*time.Millisecond)
	if span <= 0 {
		return 0
	}
	return time.Duration(hash(c.id+"/"+proxyID+"/"+strconv.FormatInt(slot, 10)) % uint64(span))
}

// claimTimeout bounds a claim's Create: a claim answered later is given up.
const claimTimeout = 2 * time.Second

// claimTTL keeps a claim until no worker can win its slot any more, so that
// a slot is never claimed twice: attempts start until the end of the next
// slot (a late worker catches up rather than skipping) and are given up
// claimTimeout later. Whole seconds: JetStream's per-key TTLs are at least
// 1 s.
func claimTTL(interval time.Duration) time.Duration {
	return time.Duration(math.Ceil((2*interval + claimTimeout).Seconds())) * time.Second
}

func hash(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// warn logs at most one warning every 10 s (a store that cannot be reached
// would otherwise log once per proxy per interval), counting the others.
func (c *Checker) warn(msg string, fields ...zap.Field) {
	c.warnMu.Lock()
	now := time.Now()
	if now.Sub(c.warnAt) < 10*time.Second {
		c.warnSuppressed++
		c.warnMu.Unlock()
		return
	}
	suppressed := c.warnSuppressed
	c.warnAt, c.warnSuppressed = now, 0
	c.warnMu.Unlock()
	c.log.Warn(msg, append(fields, zap.Int("similar_warnings_suppressed", suppressed))...)
}

// probe runs one probe in one of the worker's probe slots; false when ctx
// ended before it had a result.
func (c *Checker) probe(ctx context.Context, px model.Proxy, o model.HealthCheckOptions) (model.HealthCheckResult, bool) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return model.HealthCheckResult{}, false
	}
	res := c.prober.Probe(ctx, px, o)
	<-c.sem
	return res, ctx.Err() == nil
}

// dispatchLimit bounds the proxies a worker's sweep has under way (claim,
// probe, writes): enough that KV round trips do not hold back probes.
func (c *Checker) dispatchLimit() int { return max(8*c.opts.concurrency, 256) }
