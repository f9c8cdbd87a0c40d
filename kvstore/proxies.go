package kvstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// ErrRevisionConflict means a revision-checked write lost to a concurrent
// one: the record is no longer at the revision the write was based on.
var ErrRevisionConflict = errors.New("revision conflict")

// CreateProxies creates new proxy records, all or none: on a failure the
// ones created are deleted again. It returns the highest revision written,
// which a reader waits for to see them all.
func (s *Store) CreateProxies(ctx context.Context, recs []*record.Proxy) (uint64, error) {
	revs := make([]uint64, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, rec := range recs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			data := s.codec.Encode(rec)
			s.own.start(rec.ID, data, rec.Clone())
			// A new id has no revision yet: base 0 creates it.
			sh := s.placeProxy(rec)
			msg := &nats.Msg{Subject: s.proxySubject(sh, rec.ID), Data: data, Header: nats.Header{}}
			revs[i], errs[i] = s.publishCAS(ctx, msg, 0)
		}()
	}
	wg.Wait()
	// The watch takes the records in hand until it has delivered them.
	defer func() {
		for _, rec := range recs {
			s.own.done(rec.ID)
		}
	}()
	if err := errors.Join(errs...); err != nil {
		// Undo with a fresh context: the request's may be what ran out.
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i, rec := range recs {
			if errs[i] == nil {
				_ = s.shardOfPool(rec.PoolName).proxies.Delete(uctx, rec.ID, jetstream.LastRevision(revs[i]))
			}
		}
		return 0, storeErr("add proxies", err)
	}
	var last uint64
	for _, r := range revs {
		last = max(last, r)
	}
	return last, nil
}

// GetProxy reads a proxy's record and revision from its bucket's leader.
func (s *Store) GetProxy(ctx context.Context, id string) (*record.Proxy, uint64, error) {
	data, rev, err := s.getProxyData(ctx, id)
	if errors.Is(err, errNotFound) {
		return nil, 0, proxyNotFound(id)
	}
	if err != nil {
		return nil, 0, err
	}
	rec, err := s.codec.Decode(data)
	if err != nil {
		return nil, 0, fmt.Errorf("decode proxy %s: %w", id, err)
	}
	return rec, rev, nil
}

// Owed is what a proxy write owes (see the outbox package), carried in the
// write's headers; the zero value owes nothing.
type Owed struct {
	Worker string    // the committing worker's id
	Entry  string    // the encoded outbox.Entry
	At     time.Time // when the stream stored the write (set by the watch)
}

func (o Owed) set(h nats.Header) {
	if o.Entry != "" {
		h.Set(outbox.Header, o.Entry)
		h.Set(outbox.WorkerHeader, o.Worker)
	}
}

// UpdateProxy writes rec, with what the write owes in its headers, if its
// key is still at revision base, and returns the new revision.
// ErrRevisionConflict: another write came first (or the proxy was
// deleted). A write whose answer does not come may still have committed,
// and a failed request must leave nothing behind, so it is sent again
// until its answer says whether it was stored (see publishCAS).
func (s *Store) UpdateProxy(ctx context.Context, rec *record.Proxy, base uint64, owed Owed) (uint64, error) {
	data := s.codec.Encode(rec)
	s.own.start(rec.ID, data, rec.Clone())
	defer s.own.done(rec.ID)
	msg := &nats.Msg{Subject: s.proxySubject(s.placeProxy(rec), rec.ID), Data: data, Header: nats.Header{}}
	owed.set(msg.Header)
	rev, err := s.publishCAS(ctx, msg, base)
	if err == nil || errors.Is(err, ErrRevisionConflict) {
		return rev, err
	}
	return 0, storeErr("update proxy", err)
}

// DeleteProxy deletes a proxy, with what the delete owes in the delete
// marker's headers, if its key is still at revision base, and returns the
// delete marker's sequence. ErrRevisionConflict: another write came first.
// A lost answer is settled as for UpdateProxy.
func (s *Store) DeleteProxy(ctx context.Context, id string, base uint64, owed Owed) (uint64, error) {
	sh, err := s.findProxy(ctx, id)
	if errors.Is(err, errNotFound) {
		return 0, ErrRevisionConflict
	}
	if err != nil {
		return 0, err
	}
	msg := &nats.Msg{Subject: s.proxySubject(sh, id), Header: nats.Header{}}
	msg.Header.Set(kvOperation, kvDelete)
	owed.set(msg.Header)
	rev, err := s.publishCAS(ctx, msg, base)
	if err == nil || errors.Is(err, ErrRevisionConflict) {
		return rev, err
	}
	return 0, storeErr("delete proxy", err)
}

// The KV layer's delete marker: a message with this header and no value.
const (
	kvOperation = "KV-Operation"
	kvDelete    = "DEL"
)

func (s *Store) proxySubject(sh *shard, id string) string { return "$KV." + sh.bucket + "." + id }

// placeProxy is the shard of rec's pool, remembered for its id.
func (s *Store) placeProxy(rec *record.Proxy) *shard {
	i := ShardOf(rec.PoolName, len(s.shards))
	if len(s.shards) > 1 {
		s.where.set(rec.ID, i)
	}
	return &s.shards[i]
}

// getProxyData reads proxy id's last version from the leader of its
// shard's stream; a proxy whose shard is not known yet is looked for in
// each shard.
func (s *Store) getProxyData(ctx context.Context, id string) ([]byte, uint64, error) {
	if len(s.shards) == 1 {
		return s.leaderGet(ctx, s.shards[0].proxies, id)
	}
	if i, ok := s.where.get(id); ok {
		return s.leaderGet(ctx, s.shards[i].proxies, id)
	}
	for i := range s.shards {
		data, rev, err := s.leaderGet(ctx, s.shards[i].proxies, id)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err == nil {
			s.where.set(id, i)
		}
		return data, rev, err
	}
	return nil, 0, errNotFound
}

// findProxy is the shard proxy id lives in; errNotFound when none has it.
func (s *Store) findProxy(ctx context.Context, id string) (*shard, error) {
	if len(s.shards) == 1 {
		return &s.shards[0], nil
	}
	if _, _, err := s.getProxyData(ctx, id); err != nil {
		return nil, err
	}
	i, _ := s.where.get(id)
	return &s.shards[i], nil
}

// publish stores msg on the proxies stream if the key's last sequence is
// base, as a KV update does, and returns its sequence (the key's new
// revision).
func (s *Store) publish(ctx context.Context, msg *nats.Msg, base uint64) (uint64, error) {
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(base))
	if err != nil {
		var apiErr *jetstream.APIError
		// Replicated streams report the conflict as 10164, others as 10071.
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, ErrRevisionConflict
		}
		return 0, err
	}
	return ack.Sequence, nil
}

func proxyNotFound(id string) error {
	return model.Errorf(model.ErrProxyNotFound, "proxy %q does not exist", id)
}
