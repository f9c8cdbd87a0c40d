// Package events publishes the manager's lifecycle callbacks as messages on
// <prefix>.events.<name> and keeps them in the JetStream stream PHAROX_EVENTS
// so that subscribers can replay what they missed.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// StreamName is the stream that keeps every event.
const StreamName = "PHAROX_EVENTS"

// Publisher turns callback payloads into published events. A failed publish
// never fails the operation that caused it: it is retried once with the same
// Nats-Msg-Id, so the stream stores it once, and otherwise logged.
type Publisher struct {
	js     jetstream.JetStream
	prefix string
	log    *zap.Logger
	wg     sync.WaitGroup // events queued and not yet acknowledged or given up
	queue  chan *nats.Msg
	acks   chan pending
}

type options struct {
	prefix   string
	replicas int
	maxAge   time.Duration
	maxBytes int64
	log      *zap.Logger
}

// Option configures New.
type Option func(*options)

// WithPrefix sets the subject prefix (default "pharox").
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithReplicas sets the stream's replicas when this publisher creates it.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithRetention bounds the stream by age and size when this publisher creates it.
func WithRetention(maxAge time.Duration, maxBytes int64) Option {
	return func(o *options) { o.maxAge, o.maxBytes = maxAge, maxBytes }
}

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// New makes sure the stream exists and returns a publisher.
func New(ctx context.Context, nc *nats.Conn, opts ...Option) (*Publisher, error) {
	o := options{prefix: "pharox", replicas: 1, maxAge: 24 * time.Hour, maxBytes: 1 << 30, log: zap.NewNop()}
	for _, opt := range opts {
		opt(&o)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cfg := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "pharox lifecycle events",
		Subjects:    []string{o.prefix + ".events.>"},
		Storage:     jetstream.FileStorage,
		Replicas:    o.replicas,
		MaxAge:      o.maxAge,
		MaxBytes:    o.maxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
	if err := ensureStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	p := &Publisher{js: js, prefix: o.prefix, log: o.log, queue: make(chan *nats.Msg, 16384), acks: make(chan pending, 16384)}
	go p.sendLoop()
	go p.ackLoop()
	return p, nil
}

// Subject is the subject an event of that name is published on.
func (p *Publisher) Subject(name string) string { return p.prefix + ".events." + name }

// Acquired publishes acquired, or acquire_failed when the lease is nil.
func (p *Publisher) Acquired(ev model.AcquireEvent) {
	name := model.EventAcquired
	if ev.Lease == nil {
		name = model.EventAcquireFailed
	}
	p.publish(name, ev)
}

// Released publishes released.
func (p *Publisher) Released(ev model.ReleaseEvent) { p.publish(model.EventReleased, ev) }

// Expired publishes expired.
func (p *Publisher) Expired(ev model.ExpiredEvent) { p.publish(model.EventExpired, ev) }

// Renewed publishes renewed.
func (p *Publisher) Renewed(ev model.RenewedEvent) { p.publish(model.EventRenewed, ev) }

// Health publishes health.
func (p *Publisher) Health(ev model.HealthEvent) { p.publish(model.EventHealth, ev) }

// Cooldown publishes cooldown.
func (p *Publisher) Cooldown(ev model.CooldownEvent) { p.publish(model.EventCooldown, ev) }

// Flush waits until every publish so far is acknowledged or given up on.
func (p *Publisher) Flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Publisher) publish(name string, payload any) {
	data, err := json.Marshal(payload)
	if err != nil {
		p.log.Error("event not encodable", zap.String("event", name), zap.Error(err))
		return
	}
	msg := &nats.Msg{Subject: p.Subject(name), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, uuid.NewString())
	p.wg.Add(1)
	// One sender keeps events in the order their changes committed on this
	// worker; a full queue slows requests down rather than dropping events.
	p.queue <- msg
}

// sendLoop publishes in order without waiting for acks; ackLoop waits for
// them behind it.
func (p *Publisher) sendLoop() {
	defer close(p.acks)
	for msg := range p.queue {
		fut, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			fut, err = p.js.PublishMsgAsync(msg)
		}
		if err != nil {
			p.failed(msg, err)
			continue
		}
		p.acks <- pending{msg: msg, fut: fut}
	}
}

func (p *Publisher) ackLoop() {
	for pd := range p.acks {
		if err := waitAck(pd.fut); err != nil {
			// The retry reuses the Nats-Msg-Id: if the first one was
			// stored after all, the stream drops the copy.
			if fut, perr := p.js.PublishMsgAsync(pd.msg); perr != nil {
				err = perr
			} else if err = waitAck(fut); err == nil {
				p.wg.Done()
				continue
			}
			p.failed(pd.msg, err)
			continue
		}
		p.wg.Done()
	}
}

func (p *Publisher) failed(msg *nats.Msg, err error) {
	p.log.Warn("event publish failed", zap.String("subject", msg.Subject),
		zap.String("msg_id", msg.Header.Get(jetstream.MsgIDHeader)), zap.Error(err))
	p.wg.Done()
}

// Close flushes what is queued (until ctx ends) and stops the publisher.
// Nothing may be published after Close.
func (p *Publisher) Close(ctx context.Context) error {
	err := p.Flush(ctx)
	close(p.queue)
	return err
}

type pending struct {
	msg *nats.Msg
	fut jetstream.PubAckFuture
}

func waitAck(fut jetstream.PubAckFuture) error {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-fut.Ok():
		return nil
	case err := <-fut.Err():
		return err
	case <-t.C:
		return errors.New("no ack within 5s")
	}
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.Stream(actx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(actx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				err = nil
			}
		}
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: stream %s: %w", model.ErrUnavailable, cfg.Name, ctx.Err())
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: stream %s: %w", model.ErrUnavailable, cfg.Name, lastErr)
}
