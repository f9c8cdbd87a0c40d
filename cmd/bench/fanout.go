package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fanoutScenarioN is the number of the watch fan-out scenario in --scenarios.
const fanoutScenarioN = 14

// Scenario 14 answers the performance issue's question of how workers
// should learn of each other's writes, with no pharox code in the way: what
// does it cost the NATS server to deliver every write of a KV bucket to W
// workers, (a) as a KV watch each (an ordered push consumer per worker,
// which is what the replica uses today), (b) as the bucket's RePublish
// (the server re-sends each stored message as a plain core NATS message
// carrying its stream sequence; one subscription per worker)?
const (
	fanoutWrites  = 30000 // puts per point
	fanoutKeys    = 1000  // keys they are spread over (a pool's proxies)
	fanoutValue   = 320   // bytes per value: about a proxy record
	fanoutWriters = 16    // concurrent writers
	fanoutRounds  = 3     // the ways alternate, so drift weighs on both alike
	fanoutHeader  = 1300  // bytes of a pharox write's outbox header (its events)
)

// fanoutWay is one way of delivering the bucket's writes to watchers.
type fanoutWay struct {
	name      string
	republish bool
	header    int // bytes of header on each write, as the outbox's events are
}

// fanoutWays are the two ways compared, the replica's own first.
func fanoutWays() []fanoutWay {
	return []fanoutWay{
		{name: "KV watch (ordered consumer)"},
		{name: "RePublish (core subscription)", republish: true},
		{name: "KV watch, 1,300 B outbox header on each write", header: fanoutHeader},
	}
}

// fanoutPoint is one measured run: writes, the server's and this process's
// CPU over them, and the messages the watchers got.
type fanoutPoint struct {
	watchers          int
	server, bench     time.Duration
	delivered, writes int64
	took              time.Duration
}

func runFanoutScenario(ctx context.Context, cfg benchConfig, rep *report) error {
	progress("scenario %d: what the server spends to tell W watchers of every KV write: watch vs RePublish (%d writes a point)", fanoutScenarioN, fanoutWrites)
	begun := time.Now()
	defer func() { rep.Seconds += time.Since(begun).Seconds() }()
	p, err := startNATSProcess()
	if err != nil {
		return err
	}
	defer p.stop()
	e := &env{proc: p}
	nc, err := nats.Connect(p.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	counts := []int{0, 2, 8}
	ways := fanoutWays()
	points := map[string]map[int][]fanoutPoint{}
	n := 0
	for round := range fanoutRounds {
		for _, way := range ways {
			if points[way.name] == nil {
				points[way.name] = map[int][]fanoutPoint{}
			}
			for _, w := range counts {
				n++
				pt, err := fanoutRun(ctx, e, js, fmt.Sprintf("FAN_%d", n), way, w)
				if err != nil {
					return fmt.Errorf("scenario %d, %s, %d watchers, round %d: %w", fanoutScenarioN, way.name, w, round+1, err)
				}
				points[way.name][w] = append(points[way.name][w], pt)
				progress("  %s, %d watchers, round %d: server %.0f µs/write, %d delivered in %s",
					way.name, w, round+1, perWrite(pt.server, pt.writes), pt.delivered, pt.took.Round(time.Millisecond))
			}
		}
	}
	scn := fmt.Sprintf("%d fan-out", fanoutScenarioN)
	perWatcher := map[string]float64{}
	for _, way := range ways {
		base := meanCPU(points[way.name][0], func(p fanoutPoint) time.Duration { return p.server })
		rep.Rows = append(rep.Rows, row{Scenario: scn, Case: way.name + ": server CPU per write, no watcher", Value: base, Unit: "µs",
			Note: fmt.Sprintf("%d writes over %d keys, %d B values, %d writers; mean of %d rounds", fanoutWrites, fanoutKeys, fanoutValue, fanoutWriters, fanoutRounds)})
		for _, w := range counts[1:] {
			srv := meanCPU(points[way.name][w], func(p fanoutPoint) time.Duration { return p.server })
			cli := meanCPU(points[way.name][w], func(p fanoutPoint) time.Duration { return p.bench }) -
				meanCPU(points[way.name][0], func(p fanoutPoint) time.Duration { return p.bench })
			marginal := (srv - base) / float64(w)
			perWatcher[way.name] = marginal
			rep.Rows = append(rep.Rows, row{Scenario: scn, Case: fmt.Sprintf("%s: server CPU per write per watcher, %d watcher(s)", way.name, w),
				Value: marginal, Unit: "µs", Note: fmt.Sprintf("%.0f µs per write in all; watchers' own CPU %.1f µs per message", srv, cli/float64(w))})
		}
	}
	watch, repub := perWatcher[ways[0].name], perWatcher[ways[1].name]
	if watch > 0 {
		rep.Rows = append(rep.Rows, row{Scenario: scn, Case: "RePublish vs KV watch: server CPU per write per watcher, 8 watchers", Value: repub, Unit: "µs",
			Ratio: repub / watch, RatioOf: "KV watch"})
	}
	for _, r := range rep.Rows {
		if r.Scenario == scn {
			progress("  %s / %s: %.1f %s", r.Scenario, r.Case, r.Value, r.Unit)
		}
	}
	return nil
}

// fanoutRun creates a bucket, starts w watchers on connections of their
// own (as w workers would have), writes fanoutWrites values and waits for
// every watcher to have seen the last one. The CPU is measured from the
// first write to the last delivery.
func fanoutRun(ctx context.Context, e *env, js jetstream.JetStream, bucket string, way fanoutWay, w int) (fanoutPoint, error) {
	kcfg := jetstream.KeyValueConfig{Bucket: bucket, History: 1}
	subject := "fanout." + strings.ToLower(bucket) + ".>"
	if way.republish {
		kcfg.RePublish = &jetstream.RePublish{Source: "$KV." + bucket + ".>", Destination: subject}
	}
	kv, err := js.CreateKeyValue(ctx, kcfg)
	if err != nil {
		return fanoutPoint{}, err
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), bucket) }()

	var delivered atomic.Int64
	seen := make([]atomic.Uint64, w) // the highest stream sequence each watcher got
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	for i := range w {
		wc, err := nats.Connect(e.proc.url)
		if err != nil {
			return fanoutPoint{}, err
		}
		defer wc.Close()
		note := func(seq uint64) {
			delivered.Add(1)
			if seq > seen[i].Load() {
				seen[i].Store(seq)
			}
		}
		if way.republish {
			sub, err := wc.Subscribe(subject, func(m *nats.Msg) {
				seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
				note(seq)
			})
			if err != nil {
				return fanoutPoint{}, err
			}
			_ = sub.SetPendingLimits(-1, -1)
			if err := wc.Flush(); err != nil {
				return fanoutPoint{}, err
			}
			continue
		}
		wjs, err := jetstream.New(wc)
		if err != nil {
			return fanoutPoint{}, err
		}
		wkv, err := wjs.KeyValue(ctx, bucket)
		if err != nil {
			return fanoutPoint{}, err
		}
		watcher, err := wkv.WatchAll(wctx)
		if err != nil {
			return fanoutPoint{}, err
		}
		<-watcher.Updates() // nil: the (empty) bucket's initial values are in
		go func() {
			for en := range watcher.Updates() {
				if en != nil {
					note(en.Revision())
				}
			}
		}()
	}

	value := make([]byte, fanoutValue)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	before := e.cpu()
	start := time.Now()
	var next atomic.Int64
	var last atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, fanoutWriters)
	for range fanoutWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= fanoutWrites {
					return
				}
				rev, err := fanoutPut(ctx, js, kv, bucket, fmt.Sprintf("k%d", i%fanoutKeys), value, way.header)
				if err != nil {
					errs <- err
					return
				}
				for cur := last.Load(); rev > cur && !last.CompareAndSwap(cur, rev); cur = last.Load() {
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fanoutPoint{}, err
	}
	if err := fanoutWait(ctx, seen, last.Load()); err != nil {
		return fanoutPoint{}, err
	}
	took := time.Since(start)
	used := e.cpu().sub(before)
	return fanoutPoint{watchers: w, server: used.server, bench: used.bench, delivered: delivered.Load(), writes: fanoutWrites, took: took}, nil
}

// fanoutPut writes one value, with header bytes of header when asked.
func fanoutPut(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, bucket, key string, value []byte, header int) (uint64, error) {
	if header == 0 {
		return kv.Put(ctx, key, value)
	}
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Data = value
	m.Header.Set("Pharox-Outbox", strings.Repeat("e", header))
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// fanoutWait waits until every watcher has seen sequence last, polling
// the counters (they are fed by callbacks; nothing to wait on).
func fanoutWait(ctx context.Context, seen []atomic.Uint64, last uint64) error {
	deadline := time.Now().Add(60 * time.Second)
	for i := range seen {
		for seen[i].Load() < last {
			if time.Now().After(deadline) {
				return fmt.Errorf("watcher %d saw sequence %d of %d after 60 s", i+1, seen[i].Load(), last)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

func perWrite(d time.Duration, writes int64) float64 {
	return float64(d.Microseconds()) / float64(writes)
}

// meanCPU is the mean over points of f, in µs per write.
func meanCPU(points []fanoutPoint, f func(fanoutPoint) time.Duration) float64 {
	sum := 0.0
	for _, p := range points {
		sum += perWrite(f(p), p.writes)
	}
	return sum / float64(len(points))
}
