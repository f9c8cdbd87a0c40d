package worker_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/worker"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/manager"
	"github.com/pharox/pharox-nats/model"
)

const timeout = 10 * time.Second

// request sends a contract request and decodes a successful reply into out.
func request(t *testing.T, nc *nats.Conn, subject string, req, out any) {
	t.Helper()
	data, err := json.Marshal(req)
	require.NoError(t, err)
	msg, err := nc.Request(subject, data, timeout)
	require.NoError(t, err, subject)
	require.Empty(t, msg.Header.Get("Nats-Service-Error-Code"), "%s: %s", subject, msg.Data)
	if out != nil {
		require.NoError(t, json.Unmarshal(msg.Data, out))
	}
}

// poolPerShard names a pool for each of shards shards (pool0, pool1, ...
// until every shard has one), keyed by shard: for the sharding tests that
// use every shard.
func poolPerShard(shards int) map[int]string {
	pools := map[int]string{}
	for i := 0; len(pools) < shards; i++ {
		name := fmt.Sprintf("pool%d", i)
		if _, ok := pools[kvstore.ShardOf(name, shards)]; !ok {
			pools[kvstore.ShardOf(name, shards)] = name
		}
	}
	return pools
}

// acquireInNewPool creates pool with one proxy (host "h"+pool) and acquires
// it: the lease must be granted.
func acquireInNewPool(t *testing.T, nc *nats.Conn, pool string) model.AcquireReply {
	t.Helper()
	request(t, nc, "pharox.admin.pools.create", map[string]any{"name": pool}, nil)
	request(t, nc, "pharox.admin.proxies.add", map[string]any{"pool_name": pool,
		"proxies": []any{map[string]any{"host": "h" + pool, "port": 1}}}, nil)
	var rep model.AcquireReply
	request(t, nc, "pharox.acquire", map[string]any{"pool_name": pool}, &rep)
	require.NotNil(t, rep.Lease, pool)
	return rep
}

// TestStartFailureLeavesNothingRunning makes each step of Start fail in
// turn: whatever it had started by then (store watchers, the events
// publisher, the health checker, subscriptions) is shut down, with no
// goroutine left behind.
func TestStartFailureLeavesNothingRunning(t *testing.T) {
	_, nc := runServer(t)
	ctx := t.Context()

	// A whole worker first, so that the server has every bucket and the
	// stream and the connection its request multiplexer: what is left
	// after that is the baseline.
	w, err := worker.Start(ctx, worker.Config{Conn: nc})
	require.NoError(t, err)
	require.NoError(t, w.Stop(ctx))
	baseline := goroutines()
	subs := nc.NumSubscriptions()

	badSeed := &manager.SeedFile{Pools: []manager.SeedPool{{Name: "seeded", Proxies: []model.ProxyInput{{Host: "h", Port: 0}}}}}
	for _, tc := range []struct {
		name string
		cfg  worker.Config
		want string
	}{
		{"events", worker.Config{Prefix: "two words"}, "worker: events: events: WithPrefix"},
		{"manager", worker.Config{MaxDuration: -time.Hour}, "WithMaxDuration"},
		{"seed", worker.Config{Seed: badSeed}, "worker: seed:"},
		{"health", worker.Config{HealthConcurrency: -1}, "WithConcurrency"},
		{"broker", worker.Config{MaxInflight: -1}, "WithMaxInflight must be at least 1, got -1"},
		{"broker timeout", worker.Config{RequestTimeout: -time.Second}, "WithRequestTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Conn = nc
			w, err := worker.Start(ctx, cfg)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, w)
			require.Equal(t, subs, nc.NumSubscriptions(), "no subscription left on the connection")
			requireNoLeak(t, baseline)
		})
	}
}

// TestStartRefusesBadConfig: what no part checks is refused before anything
// is created.
func TestStartRefusesBadConfig(t *testing.T) {
	_, nc := runServer(t)
	ctx := t.Context()
	for _, tc := range []struct {
		cfg  worker.Config
		want string
	}{
		{worker.Config{}, "a NATS connection (Conn) is required"},
		{worker.Config{Conn: nc, SweepInterval: -time.Second}, "SweepInterval must not be negative"},
		{worker.Config{Conn: nc, LeaseRetention: -time.Second}, "LeaseRetention"},
		{worker.Config{Conn: nc, SeedPath: "x.json", Seed: &manager.SeedFile{}}, "SeedPath or Seed"},
		{worker.Config{Conn: nc, SeedPath: filepath.Join(t.TempDir(), "missing.json")}, "read seed file"},
	} {
		_, err := worker.Start(ctx, tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Stream(ctx, "KV_"+kvstore.PoolsBucket)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "nothing was created")
}

// TestStopFlushesEvents sends releases that reach the worker as Stop
// begins and closes the connection as soon as Stop returns: every release
// is answered, either served (and its event is in PHAROX_EVENTS, because
// Stop finishes the requests in flight and publishes their events before
// it returns) or refused with 503 because it arrived once the worker was
// stopping (and then its lease is still active: nothing was changed).
func TestStopFlushesEvents(t *testing.T) {
	srv := natstest.RunServer(t)
	wnc, cnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
	ctx := t.Context()
	w, err := worker.Start(ctx, worker.Config{Conn: wnc})
	require.NoError(t, err)

	request(t, cnc, "pharox.admin.pools.create", map[string]any{"name": "p"}, nil)
	request(t, cnc, "pharox.admin.proxies.add", map[string]any{"pool_name": "p", "proxies": []any{map[string]any{"host": "h", "port": 1}}}, nil)
	const n = 256
	ids := make([]string, n)
	for i := range ids {
		var rep model.AcquireReply
		request(t, cnc, "pharox.acquire", map[string]any{"pool_name": "p"}, &rep)
		require.NotNil(t, rep.Lease)
		ids[i] = rep.Lease.ID
	}
	replies, err := cnc.SubscribeSync(nats.NewInbox() + ".*")
	require.NoError(t, err)
	require.NoError(t, replies.SetPendingLimits(-1, -1))
	for i, id := range ids {
		require.NoError(t, cnc.PublishRequest("pharox.release", strings.TrimSuffix(replies.Subject, "*")+strconv.Itoa(i), []byte(`{"lease_id":"`+id+`"}`)))
	}
	// The server has handed every release to the worker's connection
	// before it answers this flush; Stop's drain serves them all.
	require.NoError(t, cnc.Flush())
	require.NoError(t, w.Stop(ctx))
	wnc.Close()

	served, refused := 0, map[string]bool{}
	for range ids {
		msg, err := replies.NextMsg(timeout)
		require.NoError(t, err)
		switch code := msg.Header.Get("Nats-Service-Error-Code"); code {
		case "":
			served++
		case "503":
			i, err := strconv.Atoi(msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:])
			require.NoError(t, err)
			refused[ids[i]] = true
		default:
			t.Fatalf("release answered %s: %s", code, msg.Data)
		}
	}
	t.Logf("%d releases served, %d refused as the worker stopped", served, len(refused))
	// A worker started afterwards finds the refused releases' leases
	// still active.
	w2, err := worker.Start(ctx, worker.Config{Conn: natstest.Connect(t, srv), Prefix: "after"})
	require.NoError(t, err)
	defer func() { require.NoError(t, w2.Stop(ctx)) }()
	for _, id := range ids {
		lease, err := w2.Manager.GetLease(ctx, id)
		require.NoError(t, err)
		if refused[id] {
			require.Equal(t, model.LeaseActive, lease.Status, "a release refused with 503 changed nothing")
		} else {
			require.Equal(t, model.LeaseReleased, lease.Status)
		}
	}
	js, err := jetstream.New(cnc)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("pharox.events.>"))
	require.NoError(t, err)
	require.Equal(t, uint64(n), info.State.Subjects["pharox.events.acquired"])
	require.Equal(t, uint64(served), info.State.Subjects["pharox.events.released"], "every release served has its event")

	// Stop again returns the same result.
	require.NoError(t, w.Stop(ctx))
}

// TestSeedFile seeds from a file on start; a second worker with the same
// file adds nothing.
func TestSeedFile(t *testing.T) {
	_, nc := runServer(t)
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "seed.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"pools":[{"name":"latam","proxies":[{"host":"10.0.0.1","port":3128},{"host":"10.0.0.2","port":3128}]}]}`), 0o600))

	core, logs := observer.New(zap.InfoLevel)
	for i := 0; i < 2; i++ {
		w, err := worker.Start(ctx, worker.Config{Conn: nc, SeedPath: path, Log: zap.New(core)})
		require.NoError(t, err)
		st, err := w.Manager.PoolStats(ctx, "latam")
		require.NoError(t, err)
		require.Equal(t, 2, st.TotalProxies)
		require.NoError(t, w.Stop(ctx))
	}
	seeded := logs.FilterMessage("seeded").All()
	require.Len(t, seeded, 2)
	require.Equal(t, int64(2), seeded[0].ContextMap()["proxies_added"])
	require.Equal(t, int64(0), seeded[1].ContextMap()["proxies_added"])
	require.Equal(t, int64(2), seeded[1].ContextMap()["proxies_present"])
}

// TestSlowConsumerIsLogged: the worker's connection logs what NATS reports
// asynchronously, so that a subscription that falls behind (here one of the
// test's own on the worker's connection, which the broker passes on) is
// logged as a slow consumer.
func TestSlowConsumerIsLogged(t *testing.T) {
	srv := natstest.RunServer(t)
	wnc, cnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
	ctx := t.Context()
	log, entries := capture(zapcore.WarnLevel)
	w, err := worker.Start(ctx, worker.Config{Conn: wnc, Log: log})
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop(ctx) })

	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	sub, err := wnc.Subscribe("busy", func(*nats.Msg) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	require.NoError(t, err)
	defer close(release)
	require.NoError(t, sub.SetPendingLimits(1, -1))
	require.NoError(t, wnc.Flush())

	// One message held in the callback, one pending, the rest dropped.
	require.NoError(t, cnc.Publish("busy", nil))
	require.NoError(t, cnc.Flush())
	<-entered
	for i := 0; i < 3; i++ {
		require.NoError(t, cnc.Publish("busy", nil))
	}
	require.NoError(t, cnc.Flush())

	e := waitEntry(t, entries, "slow consumer")
	require.Equal(t, zapcore.WarnLevel, e.Level)
	require.Equal(t, "busy", e.ContextMap()["subject"])
	dropped, err := sub.Dropped()
	require.NoError(t, err)
	require.Positive(t, dropped)
}

// capture is a logger whose entries at level and above are also sent on
// the returned channel.
func capture(level zapcore.Level) (*zap.Logger, <-chan observer.LoggedEntry) {
	ch := make(chan observer.LoggedEntry, 64)
	core := &chanCore{LevelEnabler: level, ch: ch}
	return zap.New(core), ch
}

type chanCore struct {
	zapcore.LevelEnabler
	fields []zapcore.Field
	ch     chan observer.LoggedEntry
}

func (c *chanCore) With(fields []zapcore.Field) zapcore.Core {
	return &chanCore{LevelEnabler: c.LevelEnabler, fields: append(append([]zapcore.Field(nil), c.fields...), fields...), ch: c.ch}
}

func (c *chanCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *chanCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	select {
	case c.ch <- observer.LoggedEntry{Entry: e, Context: append(append([]zapcore.Field(nil), c.fields...), fields...)}:
	default:
	}
	return nil
}

func (c *chanCore) Sync() error { return nil }

// waitEntry waits for a log entry whose message contains text.
func waitEntry(t *testing.T, ch <-chan observer.LoggedEntry, text string) observer.LoggedEntry {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-ch:
			if strings.Contains(e.Message, text) {
				return e
			}
		case <-deadline:
			t.Fatalf("no log entry with %q in %s", text, timeout)
		}
	}
}

// goroutines counts this process's goroutines by where they were created,
// leaving out the embedded NATS server's own (it keeps goroutines per stream
// and per consumer, whose lifetimes are the server's business). They are
// counted by creator, not by what they run at the moment: a connection's
// read loop that was busy when the baseline was taken and waits on its
// socket later is the same goroutine, not a leak (seen in CI under load).
func goroutines() map[string]int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "nats-server/v2/") || strings.Contains(g, "created by testing.") {
			continue
		}
		out[creator(g)]++
	}
	return out
}

// creator is the "created by" line of a goroutine's stack.
func creator(stack string) string {
	for _, l := range strings.Split(stack, "\n") {
		if strings.HasPrefix(l, "created by ") {
			created, _, _ := strings.Cut(l, " in goroutine ")
			return created
		}
	}
	return "(no creator)"
}

// requireNoLeak waits until no goroutine runs that the baseline did not
// have (goroutines end a little after what ended them), and fails naming
// the ones left.
func requireNoLeak(t *testing.T, baseline map[string]int) {
	t.Helper()
	var extra []string
	deadline := time.Now().Add(timeout)
	for {
		extra = extra[:0]
		for sig, n := range goroutines() {
			if n > baseline[sig] {
				extra = append(extra, sig)
			}
		}
		if len(extra) == 0 || time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
		time.Sleep(20 * time.Millisecond) // polling a count that has no event to wait on
	}
	require.Empty(t, extra, "goroutines left running")
}
