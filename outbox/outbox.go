// Package outbox is what a committed proxy write owes the outside world:
// the lifecycle events its change caused and, through them, the ending
// records of the leases it ended. The committing worker builds them before
// the write and carries them in the write's own headers, so that they
// survive the worker: if it dies after the write and before publishing,
// another worker finds them in the proxies feed it receives anyway and
// publishes them with the same message ids (see the events package's
// Relay). An event's id is derived from the commit's stream sequence, so
// the events stream stores each one once whoever publishes it.
package outbox

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// Headers of a proxy write that owes events.
const (
	// Header holds the Entry as JSON.
	Header = "Pharox-Outbox"
	// WorkerHeader names the committing worker, so that a reader can tell
	// whose entry it is without decoding it.
	WorkerHeader = "Pharox-Worker"
)

// Entry is what one committed write owes.
type Entry struct {
	Worker string    `json:"w"`
	At     time.Time `json:"t"`
	Events []Event   `json:"e"`
}

// Event is one event a write owes: its name (the last token of its
// subject) and its payload, one of the model's event types (a pointer).
type Event struct {
	Name    string
	Payload any
}

type wireEvent struct {
	Name    string          `json:"n"`
	Payload json.RawMessage `json:"p"`
}

// MarshalJSON writes {"n": name, "p": payload}.
func (e Event) MarshalJSON() ([]byte, error) {
	p, err := json.Marshal(e.Payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(wireEvent{Name: e.Name, Payload: p})
}

// UnmarshalJSON reads the payload into the model type its name calls for.
func (e *Event) UnmarshalJSON(data []byte) error {
	var w wireEvent
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	var p any
	switch w.Name {
	case model.EventAcquired:
		p = new(model.AcquireEvent)
	case model.EventReleased:
		p = new(model.ReleaseEvent)
	case model.EventExpired:
		p = new(model.ExpiredEvent)
	case model.EventRenewed:
		p = new(model.RenewedEvent)
	case model.EventHealth:
		p = new(model.HealthEvent)
	case model.EventCooldown:
		p = new(model.CooldownEvent)
	default:
		var raw json.RawMessage
		p = &raw // a newer worker's event: passed on as it is
	}
	if err := json.Unmarshal(w.Payload, p); err != nil {
		return fmt.Errorf("outbox event %q: %w", w.Name, err)
	}
	e.Name, e.Payload = w.Name, p
	return nil
}

// Encode renders the entry as a header value (JSON escapes every control
// character, so it is one line). It writes what json.Marshal(e) writes,
// byte for byte, but marshals each payload once: through Event.MarshalJSON
// every payload was encoded, then scanned and compacted twice more (as a
// RawMessage and as a Marshaler's output), which made this a fifth of a
// worker's CPU per acquire+release pair. It returns "" if a value cannot
// be marshalled, as json.Marshal's nil did.
func (e *Entry) Encode() string {
	buf := make([]byte, 0, 1024)
	buf = append(buf, `{"w":`...)
	buf, err := appendJSON(buf, e.Worker)
	if err != nil {
		return ""
	}
	buf = append(buf, `,"t":`...)
	if buf, err = appendJSON(buf, e.At); err != nil {
		return ""
	}
	buf = append(buf, `,"e":`...)
	if e.Events == nil {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '[')
		for i, ev := range e.Events {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `{"n":`...)
			if buf, err = appendJSON(buf, ev.Name); err != nil {
				return ""
			}
			buf = append(buf, `,"p":`...)
			if buf, err = appendJSON(buf, ev.Payload); err != nil {
				return ""
			}
			buf = append(buf, '}')
		}
		buf = append(buf, ']')
	}
	buf = append(buf, '}')
	return string(buf)
}

// appendJSON appends v as json.Marshal writes it.
func appendJSON(buf []byte, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	return append(buf, data...), err
}

// Decode reads an entry from its header value.
func Decode(header string) (*Entry, error) {
	e := new(Entry)
	if err := json.Unmarshal([]byte(header), e); err != nil {
		return nil, err
	}
	return e, nil
}

// Seal completes the entry of the write committed at rev: a lease whose
// fencing token is 0 was added by that write, and its token is rev.
func (e *Entry) Seal(rev uint64) {
	for _, ev := range e.Events {
		if l := leaseOf(ev.Payload); l != nil && l.FencingToken == 0 {
			l.FencingToken = rev
		}
	}
}

// Endings are the leases the write ended (released or expired), whose
// ending records it owes.
func (e *Entry) Endings() []model.Lease {
	var out []model.Lease
	for _, ev := range e.Events {
		switch p := ev.Payload.(type) {
		case *model.ReleaseEvent:
			out = append(out, *p.Lease)
		case *model.ExpiredEvent:
			out = append(out, *p.Lease)
		}
	}
	return out
}

// SetPoolStats gives the events that carry a pool_stats snapshot the one
// taken for this write.
func (e *Entry) SetPoolStats(st model.PoolStatsSnapshot) {
	for _, ev := range e.Events {
		s := st
		switch p := ev.Payload.(type) {
		case *model.AcquireEvent:
			p.PoolStats = &s
		case *model.ReleaseEvent:
			p.PoolStats = &s
		case *model.ExpiredEvent:
			p.PoolStats = &s
		}
	}
}

// MsgID is the Nats-Msg-Id of the i-th event of the write committed at
// stream sequence rev of stream.
func MsgID(stream string, rev uint64, i int) string {
	return stream + ":" + strconv.FormatUint(rev, 10) + ":" + strconv.Itoa(i)
}

func leaseOf(payload any) *model.Lease {
	switch p := payload.(type) {
	case *model.AcquireEvent:
		return p.Lease
	case *model.ReleaseEvent:
		return p.Lease
	case *model.ExpiredEvent:
		return p.Lease
	case *model.RenewedEvent:
		return p.Lease
	}
	return nil
}
