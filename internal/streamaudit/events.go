package streamaudit

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
)

// Commits is what the writes of a proxies stream owed.
type Commits struct {
	Writes   int                          // writes that owed events
	Events   map[string]string            // Nats-Msg-Id -> event name
	Endings  map[string]model.LeaseStatus // lease id -> how it ended
	ByWorker map[string]int               // events owed by each worker
}

// AuditCommits reads the outbox entries of the proxies stream's messages
// (stream names the stream, for the events' ids).
func AuditCommits(stream string, msgs []Msg) (Commits, error) {
	out := Commits{Events: map[string]string{}, Endings: map[string]model.LeaseStatus{}, ByWorker: map[string]int{}}
	for _, m := range msgs {
		h := m.Header.Get(outbox.Header)
		if h == "" {
			continue
		}
		e, err := outbox.Decode(h)
		if err != nil {
			return out, fmt.Errorf("outbox entry at %d: %w", m.Seq, err)
		}
		out.Writes++
		out.ByWorker[e.Worker] += len(e.Events)
		for i, ev := range e.Events {
			out.Events[outbox.MsgID(stream, m.Seq, i)] = ev.Name
		}
		for _, l := range e.Endings() {
			out.Endings[l.ID] = l.Status
		}
	}
	return out, nil
}

// EventIDs maps the Nats-Msg-Id of every stored event to its name; an id
// stored twice is an error.
func EventIDs(msgs []Msg, subjectPrefix string) (map[string]string, error) {
	out := map[string]string{}
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if prev, dup := out[id]; dup {
			return out, fmt.Errorf("event id %s stored twice (%s, %s)", id, prev, m.Subject)
		}
		out[id] = m.Subject[len(subjectPrefix):]
	}
	return out, nil
}

// Unpublished lists the events owed that are not stored as owed.
func (c Commits) Unpublished(stored map[string]string) []string {
	var missing []string
	for id, want := range c.Events {
		if got := stored[id]; got != want {
			missing = append(missing, fmt.Sprintf("%s (%s): stored as %q", id, want, got))
		}
	}
	return missing
}
