// Package streamaudit reads what pharox's streams hold, for tests that
// check every committed write: Follow keeps every message of a stream as
// it is stored, through leader changes and a node's death (a durable,
// replicated consumer with acks: what a dead node delivered but no one
// acknowledged comes again), and ReadAll reads a stream from its first
// message to its last. Commits and EventIDs audit the events the proxies
// stream's writes owe against PHAROX_EVENTS.
package streamaudit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Msg is one stored message.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
	Time    time.Time
}

// Log is what Follow has received so far, each sequence once.
type Log struct {
	mu      sync.Mutex
	msgs    map[uint64]Msg
	last    uint64
	changed chan struct{}
	stop    func()

	js       jetstream.JetStream
	stream   string
	consumer string
}

// Follow keeps every message of stream from its first on until Stop. Its
// consumer is durable with replicas as given (3 on a cluster) and
// explicit acks, re-sent after 2 s without one, so a message is never
// lost with a node; a copy received twice is kept once.
func Follow(ctx context.Context, js jetstream.JetStream, stream string, replicas int) (*Log, error) {
	name := "audit-" + nuid.Next()
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second,
		MaxAckPending: 20000, DeliverPolicy: jetstream.DeliverAllPolicy, Replicas: replicas,
		MemoryStorage: false,
	})
	if err != nil {
		return nil, fmt.Errorf("audit consumer on %s: %w", stream, err)
	}
	l := &Log{msgs: map[uint64]Msg{}, changed: make(chan struct{}), js: js, stream: stream, consumer: name}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		l.add(Msg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp})
		_ = m.Ack()
	}, jetstream.PullMaxMessages(500), jetstream.PullHeartbeat(time.Second), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("audit consumer on %s: %w", stream, err)
	}
	l.stop = func() {
		cc.Stop()
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, stream, name)
	}
	return l, nil
}

func (l *Log) add(m Msg) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.msgs[m.Seq]; dup {
		return
	}
	l.msgs[m.Seq] = m
	l.last = max(l.last, m.Seq)
	close(l.changed)
	l.changed = make(chan struct{})
}

// Stop ends the consumer and deletes it.
func (l *Log) Stop() { l.stop() }

// WaitFor waits until every sequence from 1 to seq has been received or
// is not in the stream (removed by a limit, or never there): it returns
// once the highest sequence received reaches seq.
func (l *Log) WaitFor(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		last, ch := l.last, l.changed
		l.mu.Unlock()
		if last >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("audit stuck at sequence %d of %d: %w", last, seq, ctx.Err())
		}
	}
}

// Settle waits until every sequence up to seq has been received as
// WaitFor does and the consumer has nothing left to deliver or to have
// acknowledged, then reads any sequence still missing from the stream's
// leader. It returns the sequences read that way.
//
// A durable R3 consumer is meant to lose nothing with a node, yet once in
// CI (nats-server 2.15.2, the proxies stream's leader SIGKILLed under
// load) the audit ended with 40 sequences from around the kill never
// received, although the writes they hold had been acknowledged to the
// workers. The audit is of the stream, not of the consumer: what the
// consumer does not deliver once it has settled is read directly and the
// caller reports it. A sequence the stream does not hold either stays in
// Missing.
func (l *Log) Settle(ctx context.Context, seq uint64) ([]uint64, error) {
	if err := l.WaitFor(ctx, seq); err != nil {
		return nil, err
	}
	// A node restarted moments ago may not serve the consumer's info yet:
	// any error is tried again until ctx ends, and then reported.
	for {
		state := "unknown"
		cons, err := l.js.Consumer(ctx, l.stream, l.consumer)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(ctx); err == nil {
				if info.NumAckPending == 0 && info.NumPending == 0 {
					break
				}
				state = fmt.Sprintf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("audit consumer on %s never settled (%s, last error %v): %w", l.stream, state, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	var direct []uint64
	for _, seq := range l.Missing() {
		m, err := leaderGet(ctx, l.js.Conn(), l.stream, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return direct, fmt.Errorf("read %s sequence %d: %w", l.stream, seq, err)
		}
		l.add(m)
		direct = append(direct, seq)
	}
	return direct, nil
}

// leaderGet reads sequence seq of stream from the stream's leader.
// Stream.GetMsg is a direct get when the stream allows it (every KV
// bucket does), which any replica answers: one still applying the last
// writes after a leader change answers "not found" for a message the
// stream holds (seen once in CI: 7 sequences around a stopped leader).
func leaderGet(ctx context.Context, nc *nats.Conn, stream string, seq uint64) (Msg, error) {
	req, err := json.Marshal(map[string]uint64{"seq": seq})
	if err != nil {
		return Msg{}, err
	}
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return Msg{}, err
	}
	var resp struct {
		Error *struct {
			Code int    `json:"code"`
			Desc string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Hdrs    []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return Msg{}, fmt.Errorf("decode reply: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return Msg{}, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return Msg{}, fmt.Errorf("jetstream error %d: %s", resp.Error.Code, resp.Error.Desc)
	case resp.Message == nil:
		return Msg{}, jetstream.ErrMsgNotFound
	}
	m := resp.Message
	out := Msg{Seq: m.Seq, Subject: m.Subject, Data: m.Data, Time: m.Time}
	if len(m.Hdrs) > 0 {
		if out.Header, err = nats.DecodeHeadersMsg(m.Hdrs); err != nil {
			return Msg{}, fmt.Errorf("decode headers of %d: %w", seq, err)
		}
	}
	return out, nil
}

// Messages returns what was received, in sequence order.
func (l *Log) Messages() []Msg {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Msg, 0, len(l.msgs))
	for _, m := range l.msgs {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Msg) int { return int(a.Seq) - int(b.Seq) })
	return out
}

// Missing returns the sequences from 1 to the highest received that were
// not received.
func (l *Log) Missing() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for s := uint64(1); s < l.last; s++ {
		if _, ok := l.msgs[s]; !ok {
			out = append(out, s)
		}
	}
	return out
}

// ReadAll reads stream from its first message to its last (as its info
// gives it now) with an ordered consumer.
func ReadAll(ctx context.Context, js jetstream.JetStream, stream string) ([]Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []Msg
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, Msg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp})
			if meta.Sequence.Stream >= last {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("stream %s: no message up to %d", stream, last)
		}
	}
}
