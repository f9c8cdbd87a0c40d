package manager_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/internal/natstest"
	"github.com/pharox/pharox-nats/internal/workertest"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
)

// Workers started at the same moment on a fresh server race to create the
// buckets and the events stream. Every one must come up, the buckets and
// stream must exist once with the intended settings, and the workers must
// then serve as one service.
func TestConcurrentWorkerStartup(t *testing.T) {
	const workers = 4
	for round := 0; round < 3; round++ {
		srv := natstest.RunServer(t)
		conns := make([]*nats.Conn, workers)
		for i := range conns {
			conns[i] = natstest.Connect(t, srv)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ws := make([]*workertest.Worker, workers)
		errs := make([]error, workers)
		var ready, wg sync.WaitGroup
		ready.Add(workers)
		gate := make(chan struct{})
		for i := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ready.Done()
				<-gate
				ws[i], errs[i] = workertest.New(ctx, conns[i], workertest.Config{})
			}()
		}
		ready.Wait()
		start := time.Now()
		close(gate)
		wg.Wait()
		took := time.Since(start)
		for i, w := range ws {
			if w != nil {
				t.Cleanup(w.Stop)
			}
			if errs[i] != nil {
				t.Errorf("round %d: worker %d failed to start: %v", round, i, errs[i])
			}
		}
		if t.Failed() {
			cancel()
			t.FailNow()
		}
		t.Logf("round %d: %d workers up in %v", round, workers, took.Round(time.Millisecond))
		checkStartupState(t, ctx, conns[0], ws)
		cancel()
	}
}

func checkStartupState(t *testing.T, ctx context.Context, nc *nats.Conn, ws []*workertest.Worker) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Every KV bucket the workers use (the four below at least) and the
	// events stream exist, each with the intended settings, and nothing
	// else was made.
	have := map[string]bool{}
	for name := range js.StreamNames(ctx).Name() {
		have[name] = true
	}
	for _, want := range []string{events.StreamName, "KV_" + kvstore.ConsumersBucket, "KV_" + kvstore.LeasesBucket,
		"KV_" + kvstore.PoolsBucket, "KV_" + kvstore.ProxiesBucket} {
		if !have[want] {
			t.Errorf("stream %s missing after a concurrent start; have %v", want, have)
		}
	}
	for name := range have {
		if name == events.StreamName {
			continue
		}
		bucket, ok := strings.CutPrefix(name, "KV_PHAROX_")
		if !ok {
			t.Errorf("unexpected stream %s", name)
			continue
		}
		kv, err := js.KeyValue(ctx, "PHAROX_"+bucket)
		if err != nil {
			t.Fatalf("bucket %s: %v", name, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if core := bucket == "POOLS" || bucket == "PROXIES" || bucket == "LEASES" || bucket == "CONSUMERS"; (core && st.History() != 1) || st.BackingStore() != "JetStream" {
			t.Errorf("bucket %s: history %d backing %s", name, st.History(), st.BackingStore())
		}
		// The outbox holds one heartbeat per worker; the others start empty.
		if want := map[bool]uint64{true: uint64(len(ws)), false: 0}[bucket == "OUTBOX"]; st.Values() != want {
			t.Errorf("bucket %s holds %d values on a fresh start, want %d", name, st.Values(), want)
		}
	}
	info := streamInfo(t, ctx, js, events.StreamName)
	if len(info.Config.Subjects) != 1 || info.Config.Subjects[0] != "pharox.events.>" || info.Config.Duplicates <= 0 {
		t.Errorf("events stream config: subjects %v, duplicates window %v", info.Config.Subjects, info.Config.Duplicates)
	}

	// Every worker answers as the one "pharox" service.
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$SRV.PING.pharox", inbox, nil); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for len(ids) < len(ws) {
		msg, err := sub.NextMsg(2 * time.Second)
		if err != nil {
			break
		}
		var ping struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(msg.Data, &ping) == nil {
			ids[ping.ID] = true
		}
	}
	if len(ids) != len(ws) {
		t.Errorf("%d service instances answered $SRV.PING.pharox, want %d", len(ids), len(ws))
	}

	// They share the state: made on one, used on another, read on a third.
	m0, m1, m2 := ws[0].Manager, ws[1].Manager, ws[len(ws)-1].Manager
	if _, err := m0.CreatePool(ctx, model.PoolCreateRequest{Name: "boot"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.CreatePool(ctx, model.PoolCreateRequest{Name: "boot"}); err == nil {
		t.Error("a second worker created the same pool again")
	}
	if _, err := m1.AddProxies(ctx, model.ProxiesAddRequest{PoolName: "boot", Proxies: []model.ProxyInput{{Host: "10.9.0.1", Port: 1080, MaxConcurrency: ptr(1)}}}); err != nil {
		t.Fatal(err)
	}
	l, _, err := m2.AcquireProxy(ctx, model.AcquireRequest{PoolName: "boot"})
	if err != nil || l == nil {
		t.Fatalf("acquire on the last worker: %v, %v", l, err)
	}
	if none, _, err := m0.AcquireProxy(ctx, model.AcquireRequest{PoolName: "boot"}); err != nil || none != nil {
		t.Errorf("acquire of the only slot on another worker: %v, %v; want none free", none, err)
	}
	if _, err := m1.ReleaseProxy(ctx, model.ReleaseRequest{LeaseID: l.ID}); err != nil {
		t.Fatal(err)
	}
	st, err := m0.PoolStats(ctx, "boot")
	if err != nil || st.TotalLeases != 0 || st.TotalProxies != 1 {
		t.Errorf("stats after release: %+v, %v", st, err)
	}
}
