package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// baselineKVCAS measures raw JetStream KV get + revision-checked update on
// distinct keys, one key per goroutine: the ceiling any CAS-committed lease
// stands under.
func baselineKVCAS(ctx context.Context, nc *nats.Conn, conc int, d time.Duration) (float64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	bucket := fmt.Sprintf("BENCH_CAS_%d", time.Now().UnixNano())
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), bucket) }()
	keys := make([]string, conc)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
		if _, err := kv.Create(ctx, keys[i], []byte(`{"n":0}`)); err != nil {
			return 0, err
		}
	}
	ops, err := closedLoop(conc, d, func(i int) error {
		key := keys[i]
		e, err := kv.Get(ctx, key)
		if err == nil {
			_, err = kv.Update(ctx, key, e.Value(), e.Revision())
		}
		return err
	})
	return float64(ops) / d.Seconds(), err
}

// closedLoop runs op in conc goroutines, each calling it again as soon as it
// returns, for d; it returns how many calls succeeded and the first error,
// which stops the goroutine that met it.
func closedLoop(conc int, d time.Duration, op func(i int) error) (int64, error) {
	var ops atomic.Int64
	var firstErr error
	var once sync.Once
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := op(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	return ops.Load(), firstErr
}

// baselineRequestReply measures core NATS request-reply round trips against
// an echo responder.
func baselineRequestReply(nc *nats.Conn, conc int, d time.Duration) (float64, error) {
	subj := nats.NewInbox()
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		return 0, err
	}
	payload := []byte(`{"pool_name":"bench"}`)
	ops, err := closedLoop(conc, d, func(int) error {
		_, err := nc.Request(subj, payload, 5*time.Second)
		return err
	})
	return float64(ops) / d.Seconds(), err
}
