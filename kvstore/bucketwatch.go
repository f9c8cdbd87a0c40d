package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WatchHeartbeat is how often the server tells an idle bucket watch that
// it is still there. A watch is an ordered consumer, which lives on one
// node of a cluster (the stream's leader when it was made); when that node
// goes away nothing more arrives, and the watch only learns it from two
// missing heartbeats, then makes a new consumer from where it stopped.
// With nats.go's default of 5 s a worker's replica (and every "none free"
// that waits for it) stood still for 10-20 s after a node stopped; at
// 500 ms it resumes about a second after the stream has a leader again.
//
// What a bucket keeps only the last version of (History 1) is then read
// from the last version on: versions superseded during the pause are not
// delivered, as with any watch that falls behind.
const WatchHeartbeat = 500 * time.Millisecond

// Entry is one version of a key as a bucket watch delivers it.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64      // the write's stream sequence
	Created  time.Time   // when the stream stored it, by the server's clock
	Deleted  bool        // a delete, purge or TTL marker
	Header   nats.Header // the write's headers
	// Pending is how many messages the watch has still to deliver after
	// this one as the server counted when it sent it: on the first one,
	// about the size of the bucket.
	Pending uint64
	// Initial: one of the versions the bucket held when the watch started.
	Initial bool
}

// WatchBucket delivers the last version of every key of the KV bucket,
// then every write after it, to fn: one at a time, in the bucket's stream
// order, with each write's headers. It returns once the versions the
// bucket held at the start are delivered; stop ends the watch and waits
// for a call of fn in progress. Unlike jetstream's KeyValue.Watch, it
// hears from the server every WatchHeartbeat, so it resumes soon after the
// node its consumer lived on goes away.
func WatchBucket(ctx context.Context, nc *nats.Conn, bucket string, fn func(Entry)) (stop func(), err error) {
	legacy, err := nc.JetStream()
	if err != nil {
		return nil, err
	}
	prefix := "$KV." + bucket + "."
	var mu sync.Mutex // one fn at a time; orders the ready signal after the initial count is known
	var initPending, received uint64
	initDone, stopped := false, false
	ready := make(chan struct{})
	signal := func() {
		initDone = true
		close(ready)
	}
	opts := []nats.SubOpt{nats.BindStream("KV_" + bucket), nats.OrderedConsumer(), nats.DeliverLastPerSubject(), nats.IdleHeartbeat(WatchHeartbeat)}
	if _, ok := ctx.Deadline(); ok {
		// The consumer is made within ctx, not nats.go's default 5 s: on
		// a cluster just started, or one electing a leader, making it has
		// taken longer (seen in CI under -race).
		opts = append(opts, nats.Context(ctx))
	}
	mu.Lock()
	sub, err := legacy.Subscribe(prefix+">", func(m *nats.Msg) {
		meta, err := m.Metadata()
		if err != nil || len(m.Subject) <= len(prefix) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		fn(Entry{
			Key: m.Subject[len(prefix):], Value: m.Data, Revision: meta.Sequence.Stream, Created: meta.Timestamp,
			Deleted: m.Header.Get(kvOperation) != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "",
			Header:  m.Header, Pending: meta.NumPending, Initial: !initDone,
		})
		if !initDone {
			received++
			if received >= initPending || meta.NumPending == 0 {
				signal()
			}
		}
	}, opts...)
	if err != nil {
		mu.Unlock()
		return nil, fmt.Errorf("watch %s: %w", bucket, err)
	}
	stop = func() {
		_ = sub.Unsubscribe()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
	pending, err := sub.InitialConsumerPending()
	if err != nil && !errors.Is(err, nats.ErrTypeSubscription) {
		mu.Unlock()
		stop()
		return nil, err
	}
	initPending = pending
	if !initDone && (pending == 0 || received >= pending) {
		signal()
	}
	mu.Unlock()
	select {
	case <-ready:
		return stop, nil
	case <-ctx.Done():
		stop()
		return nil, fmt.Errorf("watch %s: %w", bucket, ctx.Err())
	}
}
