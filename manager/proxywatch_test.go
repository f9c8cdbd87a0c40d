package manager_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/streamaudit"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/record"
)

// proxyWatch records every committed revision of every proxy record, read
// from the proxies stream by a durable consumer with the bucket's
// replicas: on a cluster it loses nothing when a node dies (the bucket
// must keep enough versions per key: tests make it with history 64).
type proxyWatch struct {
	log *streamaudit.Log
	// Filled in by waitCaughtUp.
	revs  map[string][]watchedRev
	gaps  []uint64
	total int
}

type watchedRev struct {
	rev     uint64
	holders []string
}

func startProxyWatch(t *testing.T, ctx context.Context, js jetstream.JetStream, replicas int) *proxyWatch {
	t.Helper()
	log, err := streamaudit.Follow(ctx, js, kvstore.ProxiesStream, replicas)
	if err != nil {
		t.Fatalf("proxy watch: %v", err)
	}
	t.Cleanup(log.Stop)
	return &proxyWatch{log: log}
}

// waitCaughtUp waits until the watcher has received the bucket's last
// sequence, then decodes every revision it received.
func (w *proxyWatch) waitCaughtUp(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	info := streamInfo(t, ctx, js, kvstore.ProxiesStream)
	direct, err := w.log.Settle(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatalf("proxy watch: %v", err)
	}
	if len(direct) > 0 {
		t.Logf("proxy watch: the audit consumer never delivered %d sequences the stream holds; read directly: %v", len(direct), direct)
	}
	w.gaps = w.log.Missing()
	w.revs = map[string][]watchedRev{}
	prefix := "$KV." + kvstore.ProxiesBucket + "."
	for _, m := range w.log.Messages() {
		rec := new(record.Proxy)
		if m.Header.Get("KV-Operation") == "" && len(m.Data) > 0 {
			var err error
			if rec, err = record.DecodeProxy(m.Data); err != nil {
				t.Errorf("undecodable proxy record at %d: %v", m.Seq, err)
				rec = new(record.Proxy)
			}
		}
		holders := make([]string, 0, len(rec.Holders))
		for _, h := range rec.Holders {
			holders = append(holders, h.LeaseID)
		}
		key := strings.TrimPrefix(m.Subject, prefix)
		w.revs[key] = append(w.revs[key], watchedRev{rev: m.Seq, holders: holders})
		w.total++
	}
}
