package events

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/kvstore"
	"github.com/pharox/pharox-nats/outbox"
)

// relay publishes what a dead worker's writes owed. Every worker keeps, per
// other worker, the outbox entries of its writes above its watermark, as
// the proxies feed delivers them; a worker's heartbeat advancing its
// watermark lets the others forget them. When a worker's heartbeats stop
// (judged by the server's timestamps, so clocks do not matter), the live
// worker with the smallest id publishes its remaining entries, with the ids
// they would have had, writes their ending records, and writes the dead
// worker's watermark on its behalf so the others forget them too.
type relay struct {
	p *Publisher

	mu    sync.Mutex
	peers map[string]*peer
	// beating is the server time of this worker's first heartbeat since
	// its heartbeats last stopped for more than two periods (a leader
	// election of the outbox bucket, a slow network): only once this
	// worker has itself been beating for deadAfter does another worker's
	// silence say it is dead, and not that the bucket could not be
	// written for a while (after an election every worker resumes, one
	// after the other).
	beating, ownBeat time.Time

	watchStop func()
}

type peer struct {
	watermarks map[string]uint64 // per proxies stream (shard)
	beat       time.Time         // server time of its last heartbeat
	known      bool              // it has a key in the outbox bucket
	firstSeen  time.Time         // when an entry of an unknown worker was first seen
	owed       []owedWrite
}

// prune forgets the entries at or below their stream's watermark.
func (pr *peer) prune() {
	kept := pr.owed[:0]
	for _, o := range pr.owed {
		if o.rev > pr.watermarks[o.stream] {
			kept = append(kept, o)
		}
	}
	pr.owed = kept
}

type owedWrite struct {
	stream string
	rev    uint64
	entry  string
	at     time.Time // when the stream stored the write
}

func newRelay(p *Publisher) *relay { return &relay{p: p, peers: map[string]*peer{}} }

// start watches the outbox bucket and returns once its keys are loaded.
func (r *relay) start(ctx context.Context, nc *nats.Conn) error {
	stop, err := kvstore.WatchBucket(ctx, nc, OutboxBucket, r.key)
	if err != nil {
		return err
	}
	r.watchStop = stop
	return nil
}

func (r *relay) stop() { r.watchStop() }

// key takes a worker's outbox key as the bucket's watch delivers it.
func (r *relay) key(e kvstore.Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Deleted {
		delete(r.peers, e.Key)
		return
	}
	var b beat
	if err := json.Unmarshal(e.Value, &b); err != nil {
		return
	}
	pr := r.peer(e.Key)
	pr.known = true
	if b.By == "" {
		pr.beat = e.Created
		if e.Key == r.p.worker {
			if e.Created.Sub(r.ownBeat) > 2*r.p.opts.beat {
				r.beating = e.Created
			}
			r.ownBeat = e.Created
		}
	}
	for stream, w := range b.Watermarks {
		if w > pr.watermarks[stream] {
			pr.watermarks[stream] = w
		}
	}
	pr.prune()
}

// owed keeps another worker's write that owes events, unless that worker's
// watermark says they are published, or the write is older than the events
// stream's duplicate window (a worker loading the proxies finds the last
// write of every proxy, most of them long published).
func (r *relay) owed(stream string, rev uint64, o kvstore.Owed) {
	if time.Since(o.At) > DuplicateWindow-10*time.Second {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pr := r.peer(o.Worker)
	if pr.known && rev <= pr.watermarks[stream] {
		return
	}
	if !pr.known && pr.firstSeen.IsZero() {
		pr.firstSeen = time.Now()
	}
	pr.owed = append(pr.owed, owedWrite{stream: stream, rev: rev, entry: o.Entry, at: o.At})
}

func (r *relay) peer(id string) *peer {
	pr := r.peers[id]
	if pr == nil {
		pr = &peer{watermarks: map[string]uint64{}}
		r.peers[id] = pr
	}
	return pr
}

// tick publishes, if this worker is the one responsible, what dead workers
// owed.
func (r *relay) tick(ctx context.Context) {
	for id, owed := range r.orphans() {
		// Per stream, in stream order (the feed delivers each stream in
		// order): the watermark moves up to the last write published
		// with every write before it.
		last := map[string]uint64{}
		stuck := map[string]bool{}
		for _, o := range owed {
			if ctx.Err() != nil {
				return
			}
			if stuck[o.stream] {
				continue
			}
			if r.republish(ctx, id, o) {
				last[o.stream] = o.rev
			} else {
				stuck[o.stream] = true
			}
		}
		if len(last) > 0 {
			r.forget(ctx, id, last)
		}
	}
}

// orphans returns, when this worker is the live worker with the smallest
// id, the entries owed by workers that are not live.
func (r *relay) orphans() map[string][]owedWrite {
	r.mu.Lock()
	defer r.mu.Unlock()
	var newest time.Time
	for _, pr := range r.peers {
		if pr.beat.After(newest) {
			newest = pr.beat
		}
	}
	live := func(pr *peer) bool { return pr.known && !pr.beat.Before(newest.Add(-r.p.opts.deadAfter)) }
	var liveIDs []string
	for id, pr := range r.peers {
		if live(pr) {
			liveIDs = append(liveIDs, id)
		}
	}
	sort.Strings(liveIDs)
	if len(liveIDs) == 0 || liveIDs[0] != r.p.worker {
		return nil
	}
	if r.beating.IsZero() || newest.Sub(r.beating) < r.p.opts.deadAfter {
		return nil
	}
	out := map[string][]owedWrite{}
	for id, pr := range r.peers {
		if live(pr) || len(pr.owed) == 0 {
			continue
		}
		// A worker with no key yet may be one that just started; it writes
		// its key before its first write, so wait as long as for a beat.
		if !pr.known && time.Since(pr.firstSeen) < r.p.opts.deadAfter {
			continue
		}
		out[id] = append([]owedWrite(nil), pr.owed...)
	}
	return out
}

// republish publishes one write's events with the ids the dead worker
// would have given them, and writes its ending records. Entries older than
// the stream's duplicate window are not published: they may have been, and
// the stream would no longer know.
func (r *relay) republish(ctx context.Context, worker string, o owedWrite) bool {
	if time.Since(o.at) > DuplicateWindow-10*time.Second {
		r.p.log.Warn("events of a dead worker's write older than the duplicate window are not published",
			zap.String("worker", worker), zap.Uint64("rev", o.rev), zap.Time("committed", o.at))
		return true
	}
	e, err := outbox.Decode(o.entry)
	if err != nil {
		r.p.log.Error("undecodable outbox entry skipped", zap.String("worker", worker), zap.Uint64("rev", o.rev), zap.Error(err))
		return true
	}
	e.Seal(o.rev)
	if put := r.p.opts.endings; put != nil {
		for _, l := range e.Endings() {
			put(ctx, l)
		}
	}
	for i, ev := range e.Events {
		msg, err := r.p.message(ev.Name, ev.Payload, outbox.MsgID(o.stream, o.rev, i))
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = r.p.js.PublishMsg(pctx, msg)
		cancel()
		if err != nil {
			r.p.log.Warn("relay publish failed; retried at the next tick", zap.String("worker", worker), zap.Error(err))
			return false
		}
	}
	r.p.log.Info("published events a dead worker's write owed", zap.String("worker", worker),
		zap.Uint64("rev", o.rev), zap.Int("events", len(e.Events)))
	return true
}

// forget writes a dead worker's watermarks on its behalf, up to last per
// stream.
func (r *relay) forget(ctx context.Context, worker string, last map[string]uint64) {
	r.mu.Lock()
	marks := map[string]uint64{}
	if pr := r.peers[worker]; pr != nil {
		for stream, rev := range last {
			if rev > pr.watermarks[stream] {
				pr.watermarks[stream] = rev
			}
		}
		pr.prune()
		for stream, w := range pr.watermarks {
			marks[stream] = w
		}
	} else {
		marks = last
	}
	r.mu.Unlock()
	data, _ := json.Marshal(beat{Watermarks: marks, By: r.p.worker})
	if _, err := r.p.outbox.Put(ctx, worker, data); err != nil {
		r.p.log.Warn("dead worker's watermark not written", zap.String("worker", worker), zap.Error(err))
	}
}
