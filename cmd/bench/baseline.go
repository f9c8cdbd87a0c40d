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
	for i := 0; i < conc; i++ {
		if _, err := kv.Create(ctx, fmt.Sprintf("k%d", i), []byte(`{"n":0}`)); err != nil {
			return 0, err
		}
	}
	var ops atomic.Int64
	var firstErr error
	var once sync.Once
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func(key string) {
			defer wg.Done()
			for time.Now().Before(end) {
				e, err := kv.Get(ctx, key)
				if err == nil {
					_, err = kv.Update(ctx, key, e.Value(), e.Revision())
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				ops.Add(1)
			}
		}(fmt.Sprintf("k%d", i))
	}
	wg.Wait()
	return float64(ops.Load()) / d.Seconds(), firstErr
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
	var ops atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	payload := []byte(`{"pool_name":"bench"}`)
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := nc.Request(subj, payload, 5*time.Second); err != nil {
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(ops.Load()) / d.Seconds(), nil
}
