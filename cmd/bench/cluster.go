package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/natscluster"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// clusterScenarioN is the cluster scenario (--cluster N --shards 1,3): for
// each shard count, a fresh N-node cluster of child processes, one worker
// per node with R3 (or RN) buckets, many pools, acquire+release pairs.
const clusterScenarioN = 13

// clusterRun is what one shard count measured.
type clusterRun struct {
	shards int
	// watcher is the CPU of the watch-only worker (--cluster-watcher)
	// during the run; watched the writes it was delivered (pools and
	// proxies buckets).
	watcher    time.Duration
	watched    uint64
	hasWatcher bool
	// raw is the substrate alone on the same cluster: KV get+CAS on
	// S R3 buckets (leaders spread as the shards'), its ops/s and CPU.
	rawOps              int64
	rawSecs             float64
	rawServer, rawBench time.Duration
	pairs               pairRun
	server              time.Duration            // CPU of all nodes during the run
	bench               time.Duration            // CPU of this process (workers and clients)
	nodeCPU             map[string]time.Duration // per node
	// writes is each stream's sequence delta during the run; leader its
	// leader at the end (and moved: it changed during the run).
	writes map[string]uint64
	leader map[string]string
	moved  []string
	placed []string // step-downs made before the run to spread the leaders
	pools  map[int]int
}

// serverPerPair is the nodes' CPU µs per pair, summed over the nodes.
func (r clusterRun) serverPerPair() float64 {
	return float64(r.server.Microseconds()) / float64(max(r.pairs.Pairs, 1))
}

func proxiesStreams(shards int) []string {
	out := make([]string, shards)
	for i := range out {
		out[i] = kvstore.ProxiesStreamName(i, shards)
	}
	return out
}

func leasesStreams(shards int) []string {
	out := make([]string, shards)
	for i := range out {
		out[i] = "KV_" + kvstore.LeasesBucketName(i, shards)
	}
	return out
}

// runClusterScenario measures each shard count of cfg.shards on a fresh
// cluster, in the same run, and adds its rows and the targets.
func runClusterScenario(ctx context.Context, cfg benchConfig, rep *report) error {
	start := time.Now()
	add := func(r row) {
		rep.Rows = append(rep.Rows, r)
		progress("  %s / %s: %.0f %s %s", r.Scenario, r.Case, r.Value, r.Unit, r.Note)
	}
	runs := map[int][]clusterRun{}
	for round, sh := range cfg.shards {
		progress("scenario %d (%d/%d): %d-node cluster (child processes), %d workers R%d, --shards %d, %d pools x %d proxies, %d clients",
			clusterScenarioN, round+1, len(cfg.shards), cfg.cluster, cfg.cluster, min(3, cfg.cluster), sh, cfg.clusterPools, cfg.clusterPoolSize, cfg.clusterClients)
		r, err := clusterOnce(ctx, cfg, sh)
		if err != nil {
			return fmt.Errorf("scenario %d, --shards %d: %w", clusterScenarioN, sh, err)
		}
		runs[sh] = append(runs[sh], r)
		clusterRows(cfg, r, add)
		if r.pairs.OverLease {
			rep.OverLease = true
		}
	}
	rep.Cluster = clusterTable(runs)
	rep.Seconds += time.Since(start).Seconds()
	return nil
}

// clusterRows renders one shard count's figures.
func clusterRows(cfg benchConfig, r clusterRun, add func(row)) {
	scn := fmt.Sprintf("%d cluster", clusterScenarioN)
	pr := r.pairs
	note := fmt.Sprintf("%d pairs", pr.Pairs)
	if pr.Empty > 0 {
		note += fmt.Sprintf(", %d empty", pr.Empty)
	}
	if pr.Errors > 0 {
		note += fmt.Sprintf(", %d errors", pr.Errors)
	}
	var pools []string
	for i := 0; i < r.shards; i++ {
		pools = append(pools, strconv.Itoa(r.pools[i]))
	}
	note += "; pools per shard " + strings.Join(pools, "/")
	cpu := fmt.Sprintf("%.0f+%.0f", r.serverPerPair(), float64(r.bench.Microseconds())/float64(max(pr.Pairs, 1)))
	add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: %d nodes, %d workers, %d clients", r.shards, cfg.cluster, cfg.cluster, cfg.clusterClients),
		Value: pr.perSecond(), Unit: "pairs/s", P50Ms: float64(pr.P50) / 1e6, P99Ms: float64(pr.P99) / 1e6, CPU: cpu, Note: note})

	// Writes per pair, stream by stream.
	var total uint64
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(r.writes)) {
		w := r.writes[name]
		total += w
		if w > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", strings.TrimPrefix(name, "KV_"), float64(w)/float64(max(pr.Pairs, 1))))
		}
	}
	add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: stream writes per pair (all streams)", r.shards), Value: float64(total) / float64(max(pr.Pairs, 1)), Unit: "writes", Note: strings.Join(parts, ", ")})
	if r.rawOps > 0 {
		add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: raw KV get+CAS on %d R3 bucket(s), %d goroutines", r.shards, r.shards, cfg.clusterClients),
			Value: float64(r.rawOps) / r.rawSecs, Unit: "ops/s",
			CPU:  fmt.Sprintf("%.0f+%.0f", float64(r.rawServer.Microseconds())/float64(r.rawOps), float64(r.rawBench.Microseconds())/float64(r.rawOps)),
			Note: "the substrate alone on the same cluster, leaders spread as the shards'"})
	}
	if r.hasWatcher && r.watched > 0 {
		add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: watch-only worker: CPU per watched write", r.shards), Value: float64(r.watcher.Nanoseconds()) / 1e3 / float64(r.watched), Unit: "µs",
			Note: fmt.Sprintf("its own process, replica of every shard; %d writes watched (%.2f per pair), %.0f µs per pair", r.watched, float64(r.watched)/float64(max(pr.Pairs, 1)), float64(r.watcher.Microseconds())/float64(max(pr.Pairs, 1)))})
	}
	if len(r.placed) > 0 {
		add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: leaders moved before the run (step-down)", r.shards), Value: float64(len(r.placed)), Unit: "moves", Note: strings.Join(r.placed, ", ")})
	}
	if len(r.moved) > 0 {
		add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: leaders that changed during the run", r.shards), Value: float64(len(r.moved)), Unit: "streams", Note: strings.Join(r.moved, ", ")})
	}

	// Each node: share of the proxies streams' writes, of all writes, CPU.
	proxies := map[string]bool{}
	for _, s := range proxiesStreams(r.shards) {
		proxies[s] = true
	}
	shares, allShares := r.writeShares(proxies), r.writeShares(nil)
	for _, node := range slices.Sorted(maps.Keys(r.nodeCPU)) {
		var led []string
		for _, name := range slices.Sorted(maps.Keys(r.writes)) {
			if r.leader[name] == node && (proxies[name] || strings.HasPrefix(name, "KV_"+kvstore.LeasesBucket)) {
				led = append(led, strings.TrimPrefix(name, "KV_PHAROX_"))
			}
		}
		if len(led) == 0 {
			led = []string{"no shard stream"}
		}
		add(row{Scenario: scn, Case: fmt.Sprintf("S=%d: node %s share of proxies-stream writes", r.shards, node), Value: 100 * shares[node], Unit: "%",
			CPU:  fmt.Sprintf("%.0f", float64(r.nodeCPU[node].Microseconds())/float64(max(pr.Pairs, 1))),
			Note: fmt.Sprintf("leads %s; %.0f%% of all stream writes", strings.Join(led, " "), 100*allShares[node])})
	}
}

// writeShares is each node's share of the writes of the streams it led
// (only those of only, nil: all streams).
func (r clusterRun) writeShares(only map[string]bool) map[string]float64 {
	out := map[string]float64{}
	var total uint64
	for name, w := range r.writes {
		if only != nil && !only[name] {
			continue
		}
		total += w
	}
	for name, w := range r.writes {
		if (only != nil && !only[name]) || total == 0 {
			continue
		}
		out[r.leader[name]] += float64(w) / float64(total)
	}
	return out
}

// clusterTable is the target table for the cluster scenario. A
// shard count measured more than once (--shards 1,3,1,3) counts with all
// its rounds: CPU per pair over all their pairs, and the worst round's
// busiest node.
func clusterTable(runs map[int][]clusterRun) []tableRow {
	var rows []tableRow
	perPair := func(rs []clusterRun) (cpu, rate float64) {
		var srv time.Duration
		var pairs int64
		var secs float64
		for _, r := range rs {
			srv += r.server
			pairs += r.pairs.Pairs
			secs += r.pairs.Seconds
		}
		if pairs == 0 {
			return 0, 0
		}
		return float64(srv.Microseconds()) / float64(pairs), float64(pairs) / secs
	}
	rounds := func(rs []clusterRun) string {
		if len(rs) < 2 {
			return ""
		}
		return fmt.Sprintf(", %d rounds", len(rs))
	}
	one, three := runs[1], runs[3]
	var maxShare *float64
	note := "run --cluster 3 --shards 3"
	if len(three) > 0 {
		proxies := map[string]bool{}
		for _, s := range proxiesStreams(3) {
			proxies[s] = true
		}
		var worst float64
		var who string
		placed := 0
		for _, r := range three {
			placed += len(r.placed)
			for node, v := range r.writeShares(proxies) {
				if v > worst {
					worst, who = v, node
				}
			}
		}
		maxShare = ptr(100 * worst)
		note = "busiest node " + who + rounds(three)
		if placed > 0 {
			note += fmt.Sprintf("; leaders spread by %d step-down(s) before the run", placed)
		}
	}
	met, tgt := atMost(maxShare, 50)
	r := tableRow{Measure: "S=3: no node leads more than 50% of the proxies-stream writes", Unit: "%", Target: tgt, Met: met, Note: note}
	if maxShare != nil {
		r.Measured, r.Value = true, *maxShare
	}
	rows = append(rows, r)
	var ratio *float64
	note = "run --cluster 3 --shards 1,3"
	cpu1, rate1 := perPair(one)
	cpu3, rate3 := perPair(three)
	if cpu1 > 0 && cpu3 > 0 {
		ratio = ptr(cpu3 / cpu1)
		note = fmt.Sprintf("%.0f µs with S=3 vs %.0f µs with S=1, summed over the nodes%s", cpu3, cpu1, rounds(three))
	}
	met, tgt = atMost(ratio, 1.1)
	r = tableRow{Measure: "S=3 server CPU per pair vs S=1", Unit: "x", Target: tgt, Met: met, Note: note}
	if ratio != nil {
		r.Measured, r.Value = true, *ratio
	}
	rows = append(rows, r)
	raw := func(rs []clusterRun) float64 {
		var srv time.Duration
		var ops int64
		for _, r := range rs {
			srv, ops = srv+r.rawServer, ops+r.rawOps
		}
		if ops == 0 {
			return 0
		}
		return float64(srv.Microseconds()) / float64(ops)
	}
	if raw1, raw3 := raw(one), raw(three); raw1 > 0 && raw3 > 0 {
		rows = append(rows, tableRow{Measure: "for information: raw KV get+CAS server CPU per op, 3 R3 buckets vs 1", Unit: "x", Measured: true, Value: raw3 / raw1, Target: "-",
			Note: fmt.Sprintf("%.0f µs vs %.0f µs: what 3 streams instead of 1 cost JetStream itself", raw3, raw1)})
	}
	if rate1 > 0 && rate3 > 0 {
		rows = append(rows, tableRow{Measure: "for information: S=3 pairs/s vs S=1 (one machine: the nodes share its cores)", Unit: "x", Measured: true, Value: rate3 / rate1, Target: "-",
			Note: fmt.Sprintf("%.0f vs %.0f pairs/s", rate3, rate1)})
	}
	return rows
}

// clusterOnce runs one shard count on a fresh cluster.
func clusterOnce(ctx context.Context, cfg benchConfig, shards int) (clusterRun, error) {
	r := clusterRun{shards: shards, pools: map[int]int{}}
	dir, err := os.MkdirTemp("", "pharox-bench-cluster-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := natscluster.Start(sctx, natscluster.Config{Nodes: cfg.cluster, Dir: dir, Processes: true})
	cancel()
	if err != nil {
		return r, err
	}
	defer c.Shutdown()
	nodes := c.Nodes()
	// connect prefers node i, then the others: workers and clients spread
	// over the nodes as a deployment's would.
	connect := func(i int, name string) (*nats.Conn, error) {
		urls := []string{nodes[i%len(nodes)].ClientURL()}
		for j, n := range nodes {
			if j != i%len(nodes) {
				urls = append(urls, n.ClientURL())
			}
		}
		return nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.Timeout(10*time.Second), nats.Name(name))
	}
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	var workers []*worker.Worker
	defer func() {
		for _, w := range workers {
			stopWorker(w)
		}
	}()
	for i := range nodes {
		nc, err := connect(i, fmt.Sprintf("bench-worker-%d", i))
		if err != nil {
			return r, err
		}
		conns = append(conns, nc)
		wc := benchWorker(nc, 10*time.Second)
		wc.Replicas, wc.Shards = min(3, len(nodes)), shards
		// One at a time: two processes creating the same R3 stream at
		// once can both hang (nats-facts.md).
		w, err := worker.Start(ctx, wc)
		if err != nil {
			return r, fmt.Errorf("worker %d: %w", i, err)
		}
		workers = append(workers, w)
	}
	var clients []*nats.Conn
	for i := 0; i < 4; i++ {
		nc, err := connect(i, fmt.Sprintf("bench-client-%d", i))
		if err != nil {
			return r, err
		}
		conns = append(conns, nc)
		clients = append(clients, nc)
	}
	cl := client{nc: clients[0], prefix: prefix, timeout: 30 * time.Second}
	pools := make([]string, cfg.clusterPools)
	for p := range pools {
		pools[p] = fmt.Sprintf("cluster-%02d", p)
		if err := seedPool(cl, pools[p], cfg.clusterPoolSize, benchProxy(1)); err != nil {
			return r, fmt.Errorf("seed %s: %w", pools[p], err)
		}
		r.pools[kvstore.ShardOf(pools[p], shards)]++
	}

	admin, err := connect(0, "bench-admin")
	if err != nil {
		return r, err
	}
	conns = append(conns, admin)
	js, err := jetstream.New(admin)
	if err != nil {
		return r, err
	}
	// Spread the shard streams' leaders (proxies, then lease history) if
	// the elections did not.
	for _, group := range [][]string{proxiesStreams(shards), leasesStreams(shards)} {
		placed, err := spreadLeaders(ctx, js, admin, group, nodes)
		if err != nil {
			return r, err
		}
		r.placed = append(r.placed, placed...)
	}

	var watcher *exec.Cmd
	if cfg.clusterWatcher {
		watcher, err = startWatcherProcess(c.URLs(), shards, min(3, len(nodes)))
		if err != nil {
			return r, err
		}
		defer func() { _ = watcher.Process.Signal(os.Interrupt); _ = watcher.Wait() }()
		r.hasWatcher = true
	}
	watcherCPU := func() time.Duration {
		if watcher == nil {
			return 0
		}
		d, _ := processCPU(watcher.Process.Pid)
		return d
	}

	acquire := func(i int) model.AcquireRequest {
		return simple(pools[i%len(pools)], model.SelectorFirstAvailable)(i)
	}
	spec := pairSpec{clients: cfg.clusterClients, limit: 1, acquire: acquire, conns: clients, prefix: prefix}
	// Warm up: consumers registered, replicas and connections busy.
	warm := spec
	warm.duration = min(2*time.Second, cfg.duration/3+time.Second/2)
	_ = runPairs(ctx, warm)

	before, err := streamStates(ctx, js)
	if err != nil {
		return r, err
	}
	cpu0, bench0, err := clusterCPU(nodes)
	if err != nil {
		return r, err
	}
	w0 := watcherCPU()
	spec.duration = cfg.duration
	r.pairs = runPairs(ctx, spec)
	r.watcher = watcherCPU() - w0
	cpu1, bench1, err := clusterCPU(nodes)
	if err != nil {
		return r, err
	}
	after, err := streamStates(ctx, js)
	if err != nil {
		return r, err
	}
	r.nodeCPU = map[string]time.Duration{}
	for name, d := range cpu1 {
		r.nodeCPU[name] = d - cpu0[name]
		r.server += d - cpu0[name]
	}
	r.bench = bench1 - bench0
	r.writes, r.leader = map[string]uint64{}, map[string]string{}
	for name, a := range after {
		b := before[name]
		r.writes[name] = a.seq - b.seq
		r.leader[name] = a.leader
		if name == kvstore.PoolsStream || strings.HasPrefix(name, "KV_"+kvstore.ProxiesBucket) {
			r.watched += a.seq - b.seq
		}
		if b.leader != a.leader {
			r.moved = append(r.moved, fmt.Sprintf("%s %s->%s", name, b.leader, a.leader))
		}
	}
	sort.Strings(r.moved)

	// The substrate alone, same cluster, same spread: what S streams
	// instead of one cost JetStream itself.
	if err := rawCAS(ctx, cfg, js, admin, nodes, shards, &r); err != nil {
		return r, fmt.Errorf("raw KV get+CAS: %w", err)
	}
	return r, nil
}

// rawCAS runs KV get + revision-checked update on distinct keys over
// shards R3 buckets (goroutine i on bucket i mod shards), their leaders
// spread as the shard streams' are, and records ops and CPU in r.
func rawCAS(ctx context.Context, cfg benchConfig, js jetstream.JetStream, nc *nats.Conn, nodes []*natscluster.Node, shards int, r *clusterRun) error {
	kvs := make([]jetstream.KeyValue, shards)
	var streams []string
	for i := range kvs {
		bucket := fmt.Sprintf("BENCH_CAS_%d", i)
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage, Replicas: min(3, len(nodes))})
		if err != nil {
			return err
		}
		kvs[i] = kv
		streams = append(streams, "KV_"+bucket)
	}
	if _, err := spreadLeaders(ctx, js, nc, streams, nodes); err != nil {
		return err
	}
	conc := cfg.clusterClients
	keys := make([]string, conc)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
		if _, err := kvs[i%shards].Create(ctx, keys[i], []byte(`{"n":0}`)); err != nil {
			return err
		}
	}
	d := max(cfg.duration/2, 2*time.Second)
	cpu0, bench0, err := clusterCPU(nodes)
	if err != nil {
		return err
	}
	start := time.Now()
	var ops, mismatches atomic.Int64
	var failed atomic.Pointer[error]
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := kvs[i%shards]
			for time.Now().Before(end) && ctx.Err() == nil {
				octx, cancel := context.WithTimeout(ctx, 10*time.Second)
				e, err := kv.Get(octx, keys[i])
				if err == nil {
					_, err = kv.Update(octx, keys[i], e.Value(), e.Revision())
				}
				cancel()
				switch {
				case err == nil:
					ops.Add(1)
				case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
					// A direct get may be answered by a replica a write
					// behind: read again.
					mismatches.Add(1)
				default:
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	r.rawSecs = time.Since(start).Seconds()
	if e := failed.Load(); e != nil {
		return *e
	}
	cpu1, bench1, err := clusterCPU(nodes)
	if err != nil {
		return err
	}
	r.rawOps = ops.Load()
	for name, v := range cpu1 {
		r.rawServer += v - cpu0[name]
	}
	r.rawBench = bench1 - bench0
	return nil
}

// watchWorkerArg makes the bench binary run a watch-only worker
// (worker.Config.Maintenance: store, events and the manager's replica of
// every shard, no requests served) for the cluster scenario, whose CPU per
// watched write is what one more worker costs a deployment beyond the
// requests it serves.
const watchWorkerArg = "__watch-worker"

func startWatcherProcess(urls string, shards, replicas int) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0], watchWorkerArg, urls, strconv.Itoa(shards), strconv.Itoa(replicas))
	// The child stops when its stdin closes: when this process goes away.
	if _, err := cmd.StdinPipe(); err != nil {
		return nil, err
	}
	return startChild(cmd, "watch-only worker")
}

// serveWatcher is the watch-only worker child: ready once its replica is
// loaded, until interrupted or its parent goes away.
func serveWatcher(args []string) {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "watch-only worker: want urls shards replicas")
		os.Exit(2)
	}
	shards, _ := strconv.Atoi(args[1])
	replicas, _ := strconv.Atoi(args[2])
	nc, err := nats.Connect(args[0], nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "watch-only worker:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	wc := benchWorker(nc, 10*time.Second)
	wc.Maintenance, wc.Shards, wc.Replicas = true, shards, replicas
	w, err := worker.Start(ctx, wc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "watch-only worker:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop() }()
	<-ctx.Done()
	stopWorker(w)
	nc.Close()
}

type streamState struct {
	seq    uint64
	leader string
}

// streamStates is every stream's last sequence and leader, from the
// JetStream API (stream info).
func streamStates(ctx context.Context, js jetstream.JetStream) (map[string]streamState, error) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := map[string]streamState{}
	l := js.ListStreams(lctx)
	for info := range l.Info() {
		st := streamState{seq: info.State.LastSeq}
		if info.Cluster != nil {
			st.leader = info.Cluster.Leader
		}
		out[info.Config.Name] = st
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	return out, nil
}

// clusterCPU is each node's CPU (from /proc) and this process's.
func clusterCPU(nodes []*natscluster.Node) (map[string]time.Duration, time.Duration, error) {
	out := map[string]time.Duration{}
	for _, n := range nodes {
		d, err := processCPU(n.PID())
		if err != nil {
			return nil, 0, fmt.Errorf("node %s CPU: %w", n.Name(), err)
		}
		out[n.Name()] = d
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return out, time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// spreadLeaders steps streams down, each toward the node that leads the
// fewest of them, until no node leads more than its share (ceil(streams /
// nodes)); it returns the moves made. Elections are random: 3 streams land
// on 3 different nodes only 6 times in 27.
func spreadLeaders(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, streams []string, nodes []*natscluster.Node) ([]string, error) {
	if len(streams) < 2 || len(nodes) < 2 {
		return nil, nil
	}
	limit := (len(streams) + len(nodes) - 1) / len(nodes)
	var moves []string
	for try := 0; try < 3*len(streams); try++ {
		leaders := map[string]string{}
		count := map[string]int{}
		for _, n := range nodes {
			count[n.Name()] = 0
		}
		for _, s := range streams {
			l, err := streamLeader(ctx, js, s)
			if err != nil {
				return moves, err
			}
			leaders[s] = l
			count[l]++
		}
		var from, to string
		for _, s := range streams {
			if count[leaders[s]] > limit {
				from = s
				break
			}
		}
		if from == "" {
			return moves, nil
		}
		for _, n := range nodes {
			if to == "" || count[n.Name()] < count[to] {
				to = n.Name()
			}
		}
		req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+from, req)
		cancel()
		if err != nil {
			return moves, fmt.Errorf("step down %s: %w", from, err)
		}
		var resp struct {
			Success bool `json:"success"`
			Error   *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		_ = json.Unmarshal(msg.Data, &resp)
		if resp.Error != nil {
			return moves, fmt.Errorf("step down %s toward %s: %s", from, to, resp.Error.Description)
		}
		// Wait for the new leader (bounded).
		deadline := time.Now().Add(10 * time.Second)
		now := leaders[from]
		for now == leaders[from] && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			if l, err := streamLeader(ctx, js, from); err == nil {
				now = l
			}
		}
		moves = append(moves, fmt.Sprintf("%s %s->%s", strings.TrimPrefix(from, "KV_PHAROX_"), leaders[from], now))
		progress("  stepped %s down: %s -> %s (asked for %s)", from, leaders[from], now, to)
	}
	return moves, fmt.Errorf("leaders of %s still not spread after %d step-downs", strings.Join(streams, ","), len(moves))
}

// streamLeader is the stream's leader, waiting (up to 10 s) for one.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := js.Stream(ictx, stream)
		cancel()
		if err == nil {
			if info := s.CachedInfo(); info.Cluster != nil && info.Cluster.Leader != "" {
				return info.Cluster.Leader, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("stream %s has no leader after 10 s (%v)", stream, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
