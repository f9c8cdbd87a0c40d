package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// blockCacheIdle is how long scenario 12 leaves the server alone before a
// measurement that must find the pool's message blocks uncached:
// nats-server drops a block's cached messages 10 s after its last use
// (filestore's defaultCacheBufferExpiration), and loading the replica of a
// fresh worker, or a previous run, has just read every block.
const blockCacheIdle = 12 * time.Second

// rawKVRun is what the server alone charges, per operation, for a
// revision-checked write of a proxy's key: a KV get of the key (the
// latest message of its subject, which is the lookup nats-server makes to
// check a write's expected revision) and an update at the revision it
// read, rewriting the bytes it read.
type rawKVRun struct {
	Ops      int
	Seconds  float64
	P50, P99 time.Duration
}

func (r rawKVRun) perSecond() float64 { return float64(r.Ops) / r.Seconds }

// rawKVRewrites rewrites each key of keys in turn in the proxies bucket, as
// it is (the worker's watch installs the same record at a new revision).
// Only idle proxies may be given: a holder's fencing token is the revision
// of the write that added it.
func rawKVRewrites(ctx context.Context, nc *nats.Conn, keys []string) (rawKVRun, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return rawKVRun{}, err
	}
	// The bench's workers run with one shard: every pool's proxies are in
	// the one proxies bucket.
	kv, err := js.KeyValue(ctx, kvstore.ProxiesBucket)
	if err != nil {
		return rawKVRun{}, fmt.Errorf("proxies bucket: %w", err)
	}
	times := make([]time.Duration, 0, len(keys))
	start := time.Now()
	for _, k := range keys {
		t := time.Now()
		e, err := kv.Get(ctx, k)
		if err != nil {
			return rawKVRun{}, fmt.Errorf("get %s: %w", k, err)
		}
		if _, err := kv.Update(ctx, k, e.Value(), e.Revision()); err != nil {
			return rawKVRun{}, fmt.Errorf("update %s: %w", k, err)
		}
		times = append(times, time.Since(t))
	}
	run := rawKVRun{Ops: len(keys), Seconds: time.Since(start).Seconds()}
	sort.Slice(times, func(a, b int) bool { return times[a] < times[b] })
	run.P50, run.P99 = pct(times, 0.50), pct(times, 0.99)
	return run, nil
}

// randomProxyIDs lists n proxies of the pool drawn uniformly (with
// replacement) from its added order 1..size, one list page of one proxy
// each: the list is answered from the worker's replica, so drawing them
// reads no message block on the server.
func randomProxyIDs(c client, pool string, size, n int) ([]string, error) {
	limit := 1
	ids := make([]string, 0, n)
	for len(ids) < n {
		cur := strconv.Itoa(rand.IntN(size))
		var p model.ProxiesPage
		if err := c.call("admin.proxies.list", model.ProxiesListRequest{PoolName: pool, Limit: &limit, Cursor: &cur}, &p); err != nil {
			return nil, err
		}
		for _, px := range p.Proxies {
			ids = append(ids, px.ID)
		}
	}
	return ids, nil
}

// coldKeyRows measures, after the random selector's n acquires, the raw KV
// rewrite of n random keys of the pool starting with uncached blocks (the
// state the random selector started in), and of one key n times: the
// ratio between them is what a write to a key whose latest message sits
// in an uncached block costs the server, whoever writes it.
func coldKeyRows(ctx context.Context, e *env, pool string, size, n int, add func(row)) (rawKVRun, error) {
	ids, err := randomProxyIDs(e.client(), pool, size, n)
	if err != nil {
		return rawKVRun{}, fmt.Errorf("draw random proxies: %w", err)
	}
	time.Sleep(blockCacheIdle)
	cold, err := rawKVRewrites(ctx, e.conns[0], ids)
	if err != nil {
		return rawKVRun{}, err
	}
	one := make([]string, n)
	for i := range one {
		one[i] = ids[0]
	}
	warm, err := rawKVRewrites(ctx, e.conns[0], one)
	if err != nil {
		return rawKVRun{}, err
	}
	scn := "12 scale"
	add(row{Scenario: scn, Case: "raw KV get+update, 1 key of the pool", Value: warm.perSecond(), Unit: "ops/s",
		P50Ms: durMs(warm.P50), P99Ms: durMs(warm.P99), Note: fmt.Sprintf("%d rewrites of one proxy's record; no pharox code", warm.Ops)})
	add(row{Scenario: scn, Case: "raw KV get+update, random keys of the pool", Value: cold.perSecond(), Unit: "ops/s",
		Ratio: durMs(cold.P99) / durMs(warm.P99), RatioOf: "p99 of 1 key", P50Ms: durMs(cold.P50), P99Ms: durMs(cold.P99),
		Note: fmt.Sprintf("%d proxies drawn as the random selector draws them, blocks uncached at the start (as for the random selector); no pharox code", cold.Ops)})
	return cold, nil
}

func durMs(d time.Duration) float64 { return float64(d) / 1e6 }
