// Package events publishes pharox's lifecycle events on
// <prefix>.events.<name> and keeps them in the JetStream stream
// PHAROX_EVENTS so that subscribers can replay what they missed.
//
// An event that a committed write owes (acquired, released, expired,
// renewed, health) travels in that write's own headers (package outbox)
// and is published by the committing worker right after the commit, with a
// Nats-Msg-Id derived from the commit's stream sequence. Every worker keeps
// an outbox watermark in the bucket PHAROX_OUTBOX, saying up to which
// sequence its writes' events are all published, and is watched by the
// others: should a worker die with events unpublished, the oldest live
// worker publishes them from the proxies feed it receives anyway, with the
// same ids, so the stream stores each event once (see relay.go).
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/periodic"
	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
)

// StreamName is the stream that keeps every event.
const StreamName = "PHAROX_EVENTS"

// OutboxBucket holds each worker's outbox watermark and heartbeat.
const OutboxBucket = "PHAROX_OUTBOX"

// proxiesStream is the stream whose sequences the watermarks count.
const proxiesStream = kvstore.ProxiesStream

// ackWait is how long a publish waits for its acknowledgement before it is
// sent again (with the same id). On a cluster an acknowledgement can be
// lost in a leader change, and the ones behind it wait in line.
const ackWait = 2 * time.Second

// startTimeout bounds the first and last heartbeat, written when the
// publisher starts and closes.
const startTimeout = 5 * time.Second

// DuplicateWindow is how long the events stream remembers an event's id: a
// publish repeated within it is stored once.
const DuplicateWindow = 2 * time.Minute

// Publisher publishes events and keeps this worker's outbox. It implements
// manager.Outbox.
type Publisher struct {
	js      jetstream.JetStream
	prefix  string
	log     *zap.Logger
	opts    options
	worker  string
	tracker *tracker
	relay   *relay
	outbox  jetstream.KeyValue

	pending counter // events queued and not yet acknowledged or given up
	queue   chan queued
	acks    chan queued
	stop    context.CancelFunc
	done    sync.WaitGroup // the publisher's goroutines
	// closed closes when Close has flushed: retries stop and an event
	// enqueued after it is not published by this worker (see enqueue).
	closed chan struct{}
	// mu guards shut: Close takes it to close queue once no enqueue is
	// between its check of shut and its send.
	mu   sync.RWMutex
	shut bool

	failures atomic.Uint64 // publish attempts that failed (observe.go)
}

type queued struct {
	msg    *nats.Msg
	ticket uint64 // 0: an event no write owes
	fut    jetstream.PubAckFuture
}

type options struct {
	prefix    string
	replicas  int
	maxAge    time.Duration
	maxBytes  int64
	log       *zap.Logger
	beat      time.Duration
	deadAfter time.Duration
	endings   func(context.Context, model.Lease)
}

// Option configures New.
type Option func(*options)

// WithPrefix sets the subject prefix (default "pharox").
func WithPrefix(p string) Option { return func(o *options) { o.prefix = p } }

// WithReplicas sets the stream's and the outbox bucket's replicas when this
// publisher creates them.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithRetention bounds the stream by age and size when this publisher creates it.
func WithRetention(maxAge time.Duration, maxBytes int64) Option {
	return func(o *options) { o.maxAge, o.maxBytes = maxAge, maxBytes }
}

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

// WithHeartbeat sets how often this worker writes its outbox watermark
// (default 500 ms) and after how long without one another worker counts it
// dead and publishes what it owed (default 3 s).
func WithHeartbeat(every, deadAfter time.Duration) Option {
	return func(o *options) { o.beat, o.deadAfter = every, deadAfter }
}

// WithEndings sets how the ending records of leases a dead worker's writes
// ended are written (kvstore.Store.PutEnding); without it they are not.
func WithEndings(put func(context.Context, model.Lease)) Option {
	return func(o *options) { o.endings = put }
}

// validate refuses option values that cannot work, naming the option.
func (o options) validate() error {
	var errs []error
	if err := model.CheckPrefix(o.prefix); err != nil {
		errs = append(errs, fmt.Errorf("WithPrefix: %w", err))
	}
	if o.replicas < 1 || o.replicas > 5 {
		errs = append(errs, fmt.Errorf("WithReplicas must be 1..5, got %d", o.replicas))
	}
	if o.maxAge < 0 {
		errs = append(errs, fmt.Errorf("WithRetention max age must not be negative (0 keeps events forever), got %s", o.maxAge))
	} else if o.maxAge != 0 && o.maxAge <= DuplicateWindow {
		errs = append(errs, fmt.Errorf("WithRetention max age must be longer than the %s duplicate window, got %s", DuplicateWindow, o.maxAge))
	}
	if o.maxBytes == 0 || o.maxBytes < -1 {
		errs = append(errs, fmt.Errorf("WithRetention max bytes must be positive or -1 (unlimited), got %d", o.maxBytes))
	}
	if o.beat <= 0 || o.deadAfter < 2*o.beat {
		errs = append(errs, fmt.Errorf("WithHeartbeat: the period (%s) must be positive and at most half of dead-after (%s)", o.beat, o.deadAfter))
	}
	if o.log == nil {
		errs = append(errs, errors.New("WithLogger must not be nil (use zap.NewNop())"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// New makes sure the stream and the outbox bucket exist, loads the other
// workers' watermarks, writes this worker's first heartbeat and returns a
// publisher. Close stops it. It refuses option values that cannot work,
// naming the option.
func New(ctx context.Context, nc *nats.Conn, opts ...Option) (*Publisher, error) {
	o := options{prefix: "pharox", replicas: 1, maxAge: 24 * time.Hour, maxBytes: 1 << 30, log: zap.NewNop(),
		beat: 500 * time.Millisecond, deadAfter: 3 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
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
		Duplicates:  DuplicateWindow,
	}
	if err := ensureStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	kv, err := kvstore.EnsureBucket(ctx, js, jetstream.KeyValueConfig{Bucket: OutboxBucket,
		Description: "pharox workers' outbox watermarks and heartbeats", History: 1, TTL: time.Hour,
		Storage: jetstream.FileStorage, Replicas: o.replicas})
	if err != nil {
		return nil, err
	}
	p := &Publisher{js: js, prefix: o.prefix, log: o.log, opts: o, worker: uuid.NewString(), tracker: newTracker(),
		outbox: kv, queue: make(chan queued, 16384), acks: make(chan queued, 16384), closed: make(chan struct{})}
	p.relay = newRelay(p)
	rctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	if err := p.relay.start(ctx, nc); err != nil {
		stop()
		return nil, err
	}
	if err := p.heartbeat(ctx, startTimeout); err != nil {
		stop()
		p.relay.stop()
		return nil, err
	}
	p.done.Add(4)
	go func() { defer p.done.Done(); p.sendLoop() }()
	go func() { defer p.done.Done(); p.ackLoop() }()
	go func() { defer p.done.Done(); p.beatLoop(rctx) }()
	go func() { defer p.done.Done(); p.relayLoop(rctx) }()
	return p, nil
}

// Subject is the subject an event of that name is published on.
func (p *Publisher) Subject(name string) string { return p.prefix + ".events." + name }

// WorkerID names this worker in the outbox entries its writes carry.
func (p *Publisher) WorkerID() string { return p.worker }

// Begin registers a write on stream (a shard's proxies stream) that owes
// events; its sequence will be above above.
func (p *Publisher) Begin(stream string, above uint64) uint64 { return p.tracker.begin(stream, above) }

// Abandon forgets a write that did not commit.
func (p *Publisher) Abandon(ticket uint64) { p.tracker.abandon(ticket) }

// Committed publishes the events of the write committed at stream
// sequence rev, in order, with ids derived from it.
func (p *Publisher) Committed(ticket uint64, stream string, rev uint64, e *outbox.Entry) {
	p.tracker.committed(ticket, rev, len(e.Events))
	for i, ev := range e.Events {
		p.enqueue(ev.Name, ev.Payload, outbox.MsgID(stream, rev, i), ticket)
	}
}

// Owed hands another worker's write that owes events to the relay.
func (p *Publisher) Owed(stream string, rev uint64, owed kvstore.Owed) {
	p.relay.owed(stream, rev, owed)
}

// Publish publishes an event that no write owes, with an id of its own.
func (p *Publisher) Publish(name string, payload any) {
	p.enqueue(name, payload, uuid.NewString(), 0)
}

// enqueue hands an event to the sender. After Close it is not published
// here: an event a write owes keeps that write above this worker's
// watermark (its tracker still counts it), so another worker publishes it
// from the write's headers once this one's heartbeats have stopped; an
// event no write owes (acquire_failed) is only logged.
func (p *Publisher) enqueue(name string, payload any, id string, ticket uint64) {
	msg, err := p.message(name, payload, id)
	if err != nil {
		p.log.Error("event not encodable", zap.String("event", name), zap.Error(err))
		return
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.shut {
		p.pending.add()
		// One sender keeps events in the order their changes committed on
		// this worker; a full queue slows requests down rather than
		// dropping events, until Close.
		select {
		case p.queue <- queued{msg: msg, ticket: ticket}:
			return
		case <-p.closed:
			p.pending.done()
		}
	}
	p.log.Warn("event not published by this worker: its publisher is closed", zap.String("subject", msg.Subject),
		zap.String("msg_id", id), zap.Bool("owed_by_a_write", ticket != 0))
}

func (p *Publisher) message(name string, payload any, id string) (*nats.Msg, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: p.Subject(name), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	return msg, nil
}

// sendLoop publishes in order without waiting for acks; ackLoop waits for
// them behind it.
func (p *Publisher) sendLoop() {
	defer close(p.acks)
	for q := range p.queue {
		fut, err := p.js.PublishMsgAsync(q.msg)
		if err != nil {
			p.retry(q, err)
			continue
		}
		q.fut = fut
		p.acks <- q
	}
}

func (p *Publisher) ackLoop() {
	for q := range p.acks {
		if err := waitAck(q.fut); err != nil {
			p.retry(q, err)
			continue
		}
		p.published(q)
	}
}

// retry publishes an event again, with the same id (if the first one was
// stored after all, the stream drops the copy), until it is stored or the
// publisher closes. An event a write owes that is never stored keeps this
// worker's watermark below that write, so another worker publishes it once
// this one is gone.
func (p *Publisher) retry(q queued, err error) {
	p.failures.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer cancel()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		actx, acancel := context.WithTimeout(ctx, ackWait)
		_, err = p.js.PublishMsg(actx, q.msg)
		acancel()
		if err == nil {
			p.published(q)
			return
		}
		p.failures.Add(1)
		retry.Sleep(ctx, min(time.Second, retry.Backoff(attempt+5)))
	}
	p.log.Warn("event publish failed", zap.String("subject", q.msg.Subject),
		zap.String("msg_id", q.msg.Header.Get(jetstream.MsgIDHeader)), zap.Error(err))
	p.pending.done()
}

func (p *Publisher) published(q queued) {
	if q.ticket != 0 {
		p.tracker.acked(q.ticket)
	}
	p.pending.done()
}

// Flush waits until every event enqueued so far is acknowledged or given
// up on (with events still being enqueued, until there is a moment with
// none left).
func (p *Publisher) Flush(ctx context.Context) error {
	select {
	case <-p.pending.zero():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close flushes what is queued (until ctx ends), writes this worker's last
// watermark and stops. An event enqueued after Close (by a request that
// outlived the worker's Stop) is not published by this worker: the write
// that owes it stays above the watermark Close writes, so another worker
// publishes it from the write's own headers (see enqueue). Events not
// flushed by then are published the same way.
func (p *Publisher) Close(ctx context.Context) error {
	err := p.Flush(ctx)
	close(p.closed) // first: an enqueue blocked on a full queue gives up
	p.mu.Lock()
	p.shut = true
	close(p.queue)
	p.mu.Unlock()
	p.stop()
	p.done.Wait()
	p.relay.stop()
	if herr := p.heartbeat(ctx, startTimeout); herr != nil {
		err = errors.Join(err, herr)
	}
	if n := p.tracker.pending(); n > 0 {
		p.log.Warn("stopping with events of committed writes unpublished; another worker publishes them",
			zap.Int("writes", n))
	}
	return err
}

// counter counts events in flight. Unlike a sync.WaitGroup it may go up
// from zero while Flush waits, which requests still committing during a
// stop do.
type counter struct {
	mu    sync.Mutex
	n     int
	empty chan struct{} // closed while n == 0
}

func (c *counter) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		c.empty = make(chan struct{})
	}
	c.n++
}

func (c *counter) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		close(c.empty)
	}
}

// zero closes when the count is zero.
func (c *counter) zero() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.empty
}

// beat is the value of a worker's key in the outbox bucket: its watermark
// per stream, and who wrote it (empty: the worker itself, a heartbeat).
type beat struct {
	Watermarks map[string]uint64 `json:"watermarks"`
	By         string            `json:"by,omitempty"`
}

// heartbeat writes this worker's watermark, waiting up to timeout.
func (p *Publisher) heartbeat(ctx context.Context, timeout time.Duration) error {
	data, _ := json.Marshal(beat{Watermarks: p.tracker.watermarks()})
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := p.outbox.Put(actx, p.worker, data)
	if err != nil {
		return model.Errorf(model.ErrUnavailable, "outbox heartbeat: %w", err)
	}
	return nil
}

func (p *Publisher) beatLoop(ctx context.Context) {
	periodic.Run(ctx, p.opts.beat, func() {
		// An attempt waits one period at most: a write whose answer was
		// lost in a leader election must not hold back the next beat, or
		// this worker would look dead to the others for as long as it
		// waited, once the others' beats resume.
		if err := p.heartbeat(ctx, p.opts.beat); err != nil && ctx.Err() == nil {
			p.log.Warn("outbox heartbeat not written", zap.Error(err))
		}
	})
}

// relayLoop looks for what dead workers owed at every heartbeat period,
// apart from the heartbeats: publishing a dead worker's backlog must not
// make this worker look dead too.
func (p *Publisher) relayLoop(ctx context.Context) {
	periodic.Run(ctx, p.opts.beat, func() { p.relay.tick(ctx) })
}

func waitAck(fut jetstream.PubAckFuture) error {
	t := time.NewTimer(ackWait)
	defer t.Stop()
	select {
	case <-fut.Ok():
		return nil
	case err := <-fut.Err():
		return err
	case <-t.C:
		return fmt.Errorf("no ack within %s", ackWait)
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
		if ctx.Err() != nil {
			break
		}
		retry.Sleep(ctx, time.Duration(attempt+1)*50*time.Millisecond)
	}
	return model.Errorf(model.ErrUnavailable, "stream %s: %w", cfg.Name, lastErr)
}
