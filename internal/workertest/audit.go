package workertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/events"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
)

// Commits are what the proxies stream says the committed writes owed. The
// audit sees every commit only when the proxies bucket keeps enough
// history: create it with History 64 before any worker starts.
type Commits struct {
	Writes   int
	Events   map[string]string            // Nats-Msg-Id -> event name
	Endings  map[string]model.LeaseStatus // lease id -> how it ended
	ByWorker map[string]int               // events owed by each worker
	// Acquired are the leases the writes committed (lease id -> the
	// worker that committed it).
	Acquired map[string]string
}

// AuditCommits reads every write of the proxies stream and what its outbox
// header owed.
func AuditCommits(t testing.TB, ctx context.Context, js jetstream.JetStream) Commits {
	t.Helper()
	out := Commits{Events: map[string]string{}, Endings: map[string]model.LeaseStatus{}, ByWorker: map[string]int{},
		Acquired: map[string]string{}}
	EachMessage(t, ctx, js, kvstore.ProxiesStream, func(m jetstream.Msg, seq uint64) {
		h := m.Headers().Get(outbox.Header)
		if h == "" {
			return
		}
		e, err := outbox.Decode(h)
		if err != nil {
			t.Fatalf("outbox header of write %d: %v", seq, err)
		}
		out.Writes++
		out.ByWorker[e.Worker] += len(e.Events)
		for i, ev := range e.Events {
			out.Events[outbox.MsgID(kvstore.ProxiesStream, seq, i)] = ev.Name
			if a, ok := ev.Payload.(*model.AcquireEvent); ok && a.Lease != nil {
				out.Acquired[a.Lease.ID] = e.Worker
			}
		}
		for _, l := range e.Endings() {
			out.Endings[l.ID] = l.Status
		}
	})
	return out
}

// StoredEvents reads PHAROX_EVENTS: event id -> event name. An id stored
// twice fails the test.
func StoredEvents(t testing.TB, ctx context.Context, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	EachMessage(t, ctx, js, events.StreamName, func(m jetstream.Msg, _ uint64) {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if prev, dup := out[id]; dup {
			t.Fatalf("event id %s stored twice (%s, %s)", id, prev, m.Subject())
		}
		subject := m.Subject()
		out[id] = subject[len(subject)-len(lastToken(subject)):]
	})
	return out
}

func lastToken(subject string) string {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			return subject[i+1:]
		}
	}
	return subject
}

// MissingEvents waits, up to within, until every event the commits owe is
// stored once in PHAROX_EVENTS (another worker publishes a dead one's
// events once its heartbeats have stopped), and returns those still
// missing and how long it waited.
func MissingEvents(t testing.TB, ctx context.Context, js jetstream.JetStream, owed Commits, within time.Duration) ([]string, time.Duration) {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		stored := StoredEvents(t, ctx, js)
		var missing []string
		for id, want := range owed.Events {
			if got := stored[id]; got != want {
				missing = append(missing, fmt.Sprintf("%s (%s): stored as %q", id, want, got))
			}
		}
		if len(missing) == 0 || time.Since(start) > within {
			return missing, time.Since(start)
		}
		select {
		case <-ctx.Done():
			return missing, time.Since(start)
		case <-tick.C:
		}
	}
}

// MissingEndings lists the leases the commits ended whose ending record is
// not in PHAROX_LEASES with the status the write gave it.
func MissingEndings(t testing.TB, ctx context.Context, js jetstream.JetStream, owed Commits) []string {
	t.Helper()
	leases, err := js.KeyValue(ctx, kvstore.LeasesBucket)
	if err != nil {
		t.Fatalf("leases bucket: %v", err)
	}
	var missing []string
	for id, status := range owed.Endings {
		e, err := leases.Get(ctx, id)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		if want := `"status":"` + string(status) + `"`; !bytes.Contains(e.Value(), []byte(want)) {
			missing = append(missing, fmt.Sprintf("%s: %s, want %s", id, e.Value(), want))
		}
	}
	return missing
}

// EachMessage reads a stream from its first message to its last.
func EachMessage(t testing.TB, ctx context.Context, js jetstream.JetStream, stream string, fn func(jetstream.Msg, uint64)) {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				t.Fatalf("stream %s: %v", stream, err)
			}
			fn(m, meta.Sequence.Stream)
			if meta.Sequence.Stream >= last {
				return
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("stream %s: %v", stream, err)
		}
		if n == 0 {
			t.Fatalf("stream %s: no message up to %d", stream, last)
		}
	}
}
