package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/model"
)

// EventStream is the JetStream stream the workers keep every event in.
const EventStream = "PHAROX_EVENTS"

// Event is one lifecycle event. Exactly one of the typed payloads is set,
// by Name: Acquire for acquired and acquire_failed, Release for released,
// Expired, Renewed, Health, Cooldown. An event this client cannot decode
// has none set and DecodeErr says why; Data always holds the raw payload.
type Event struct {
	Name     string    // acquired, acquire_failed, released, expired, renewed, health, cooldown
	Subject  string    // <prefix>.events.<name>
	Time     time.Time // when it happened, from the payload; else when it was stored or received
	MsgID    string    // the Nats-Msg-Id header
	Sequence uint64    // stream sequence when read from PHAROX_EVENTS, 0 when live
	Data     json.RawMessage

	Acquire *model.AcquireEvent
	Release *model.ReleaseEvent
	Expired *model.ExpiredEvent
	Renewed *model.RenewedEvent
	Health  *model.HealthEvent
	// Cooldown (v1.1): a failure reported on release cooled a proxy down.
	Cooldown *model.CooldownEvent

	DecodeErr error
}

// Lease returns the event's lease, or nil (health events, acquire_failed).
func (e Event) Lease() *model.Lease {
	lease, _ := e.about()
	return lease
}

// PoolName returns the pool the event is about.
func (e Event) PoolName() string {
	_, pool := e.about()
	return pool
}

// about is the lease (nil for health and cooldown events) and the pool of
// whichever typed payload is set: one dispatch for Lease and PoolName.
func (e Event) about() (*model.Lease, string) {
	switch {
	case e.Acquire != nil:
		return e.Acquire.Lease, e.Acquire.PoolName
	case e.Release != nil:
		return e.Release.Lease, e.Release.PoolName
	case e.Expired != nil:
		return e.Expired.Lease, e.Expired.PoolName
	case e.Renewed != nil:
		return e.Renewed.Lease, e.Renewed.PoolName
	case e.Health != nil:
		return nil, e.Health.PoolName
	case e.Cooldown != nil:
		return nil, e.Cooldown.PoolName
	}
	return nil, ""
}

// EventOption configures SubscribeEvents.
type EventOption func(*eventOptions)

type eventOptions struct {
	since *time.Time
	names []string
}

// WithReplaySince first delivers the events PHAROX_EVENTS kept from t on,
// then goes on with live ones, in order and without gaps or repeats (one
// ordered JetStream consumer reads both).
func WithReplaySince(t time.Time) EventOption {
	return func(o *eventOptions) { o.since = &t }
}

// WithEventNames delivers only events of these names (model.EventAcquired, ...).
func WithEventNames(names ...string) EventOption {
	return func(o *eventOptions) { o.names = append(o.names, names...) }
}

// Subscription is a running event subscription.
type Subscription struct {
	stopOnce sync.Once
	stopFn   func()
	done     chan struct{}
}

// Stop ends the subscription; the handler is not called after Stop returns
// (except for a call already running).
func (s *Subscription) Stop() {
	s.stopOnce.Do(func() {
		s.stopFn()
		close(s.done)
	})
}

// Done is closed when the subscription has stopped.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// SubscribeEvents calls handler for each event, one at a time in arrival
// order, until ctx ends or Stop is called. Live events come from a core NATS
// subscription on <prefix>.events.*; with WithReplaySince they come from the
// PHAROX_EVENTS stream instead, starting at that time.
func (c *Client) SubscribeEvents(ctx context.Context, handler func(Event), opts ...EventOption) (*Subscription, error) {
	var o eventOptions
	for _, opt := range opts {
		opt(&o)
	}
	subjects := []string{c.prefix + ".events.>"}
	want := map[string]bool{}
	if len(o.names) > 0 {
		subjects = subjects[:0]
		for _, n := range o.names {
			want[n] = true
			subjects = append(subjects, c.prefix+".events."+n)
		}
	}
	var stopped atomic.Bool
	deliver := func(ev Event) {
		if !stopped.Load() {
			handler(ev)
		}
	}
	sub := &Subscription{done: make(chan struct{})}
	if o.since == nil {
		// One subscription, so the handler runs one event at a time in order.
		s, err := c.nc.Subscribe(c.prefix+".events.*", func(m *nats.Msg) {
			ev := decodeEvent(m.Subject, m.Header, m.Data, 0, time.Now())
			if len(want) == 0 || want[ev.Name] {
				deliver(ev)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("subscribe events: %w", err)
		}
		fctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		if err := c.nc.FlushWithContext(fctx); err != nil {
			_ = s.Unsubscribe()
			return nil, fmt.Errorf("subscribe events: %w", err)
		}
		sub.stopFn = func() {
			stopped.Store(true)
			_ = s.Unsubscribe()
		}
	} else {
		js, err := jetstream.New(c.nc)
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		start := o.since.UTC()
		cons, err := js.OrderedConsumer(cctx, EventStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: subjects,
			DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
			OptStartTime:   &start,
		})
		if err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, model.Errorf(model.ErrUnavailable, "event stream %s does not exist (has a worker run?): %w", EventStream, err)
			}
			return nil, fmt.Errorf("replay %s: %w", EventStream, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			var seq uint64
			stored := time.Now()
			if md, err := m.Metadata(); err == nil {
				seq, stored = md.Sequence.Stream, md.Timestamp
			}
			deliver(decodeEvent(m.Subject(), m.Headers(), m.Data(), seq, stored))
		})
		if err != nil {
			return nil, fmt.Errorf("replay %s: %w", EventStream, err)
		}
		sub.stopFn = func() {
			stopped.Store(true)
			cc.Stop()
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			sub.Stop()
		case <-sub.done:
		}
	}()
	return sub, nil
}

// OnAcquire calls fn for every acquired and acquire_failed event (the lease
// is nil for the latter), like pharox's register_acquire_callback.
func (c *Client) OnAcquire(ctx context.Context, fn func(model.AcquireEvent), opts ...EventOption) (*Subscription, error) {
	return onPayload(ctx, c, func(ev Event) *model.AcquireEvent { return ev.Acquire }, fn, opts,
		model.EventAcquired, model.EventAcquireFailed)
}

// OnRelease calls fn for every released event, like pharox's
// register_release_callback.
func (c *Client) OnRelease(ctx context.Context, fn func(model.ReleaseEvent), opts ...EventOption) (*Subscription, error) {
	return onPayload(ctx, c, func(ev Event) *model.ReleaseEvent { return ev.Release }, fn, opts, model.EventReleased)
}

// onPayload subscribes to the events of names and calls fn with the payload
// that payload picks from each, skipping the events it could not decode.
func onPayload[T any](ctx context.Context, c *Client, payload func(Event) *T, fn func(T), opts []EventOption, names ...string) (*Subscription, error) {
	opts = append(opts, WithEventNames(names...))
	return c.SubscribeEvents(ctx, func(ev Event) {
		if p := payload(ev); p != nil {
			fn(*p)
		}
	}, opts...)
}

// decodeEvent builds an Event from a message; fallback is the time to use
// when the payload carries none.
func decodeEvent(subject string, hdr nats.Header, data []byte, seq uint64, fallback time.Time) Event {
	ev := Event{Subject: subject, Sequence: seq, Data: json.RawMessage(append([]byte(nil), data...)), Time: fallback}
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		ev.Name = subject[i+1:]
	}
	if hdr != nil {
		ev.MsgID = hdr.Get(jetstream.MsgIDHeader)
	}
	var err error
	switch ev.Name {
	case model.EventAcquired, model.EventAcquireFailed:
		if err = decodePayload(data, &ev.Acquire); err == nil {
			ev.Time = ev.Acquire.CompletedAt
		}
	case model.EventReleased:
		if err = decodePayload(data, &ev.Release); err == nil {
			ev.Time = ev.Release.ReleasedAt
		}
	case model.EventExpired:
		if err = decodePayload(data, &ev.Expired); err == nil {
			ev.Time = ev.Expired.ExpiredAt
		}
	case model.EventRenewed:
		err = decodePayload(data, &ev.Renewed)
	case model.EventHealth:
		if err = decodePayload(data, &ev.Health); err == nil && !ev.Health.Result.CheckedAt.IsZero() {
			ev.Time = ev.Health.Result.CheckedAt
		}
	case model.EventCooldown:
		err = decodePayload(data, &ev.Cooldown)
	default:
		err = fmt.Errorf("unknown event %q", ev.Name)
	}
	if err != nil {
		ev.DecodeErr = fmt.Errorf("event %s: %w", subject, err)
	}
	if ev.Time.IsZero() {
		ev.Time = fallback
	}
	ev.Time = ev.Time.UTC()
	return ev
}

// decodePayload decodes data as a T into *dst, which stays nil when data is
// not one: an Event has only the payload it could read.
func decodePayload[T any](data []byte, dst **T) error {
	var p T
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*dst = &p
	return nil
}
