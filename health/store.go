package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/retry"
	"github.com/pharox/pharox-nats/model"
)

// Bucket names. Like the other pharox buckets they do not move with the
// subject prefix.
const (
	// ClaimsBucket holds one key per proxy and interval slot,
	// "<proxy id>.<slot>", created by the worker that probes the proxy in
	// that slot. Created with Create (one winner) and a per-key TTL, so a
	// crashed worker's claims lapse; in memory (a lost claim costs at most
	// one extra probe).
	ClaimsBucket = "PHAROX_HEALTH_CLAIMS"
	// CountersBucket holds the consecutive failed checks of each proxy that
	// is failing now, keyed by proxy id, updated with revision-checked
	// writes and deleted by the first good check.
	CountersBucket = "PHAROX_HEALTH"
)

// claims hands each (proxy, slot) to one worker.
type claims struct {
	kv jetstream.KeyValue
}

func claimKey(proxyID string, slot int64) string {
	return proxyID + "." + strconv.FormatInt(slot, 10)
}

// claim creates the slot's key with a TTL and returns its revision; false
// means another worker has it.
func (c *claims) claim(ctx context.Context, proxyID string, slot int64, ttl time.Duration, owner string) (uint64, bool, error) {
	rev, err := c.kv.Create(ctx, claimKey(proxyID, slot), []byte(owner), jetstream.KeyTTL(ttl))
	switch {
	case err == nil:
		return rev, true, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("claim %s: %w", claimKey(proxyID, slot), err)
}

// release gives a claim back (only if it is still the one created at rev);
// the purge marker lapses like the claim would have.
func (c *claims) release(ctx context.Context, proxyID string, slot int64, rev uint64, ttl time.Duration) error {
	return c.kv.Purge(ctx, claimKey(proxyID, slot), jetstream.LastRevision(rev), jetstream.PurgeTTL(ttl))
}

// counters keeps consecutive failed checks per proxy.
type counters struct {
	kv jetstream.KeyValue
}

type counterRecord struct {
	Failures     int       `json:"failures"`
	LastFailedAt time.Time `json:"last_failed_at"`
}

// record counts one check of proxyID and returns its consecutive failures
// including this one (0 after a good check). Every change is
// revision-checked: two checks of the same proxy counted at once both count.
func (c *counters) record(ctx context.Context, proxyID string, failed bool, at time.Time) (int, error) {
	var lastErr error
	for attempt := 0; attempt < 32; attempt++ {
		if attempt > 0 {
			retry.Sleep(ctx, time.Millisecond<<min(attempt, 5))
		}
		entry, err := c.kv.Get(ctx, proxyID)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if !failed {
				return 0, nil
			}
			data, _ := json.Marshal(counterRecord{Failures: 1, LastFailedAt: at.UTC()})
			_, err = c.kv.Create(ctx, proxyID, data)
			if err == nil {
				return 1, nil
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				lastErr = err
				continue
			}
			return 0, fmt.Errorf("count failure of %s: %w", proxyID, err)
		}
		if err != nil {
			return 0, fmt.Errorf("read failures of %s: %w", proxyID, err)
		}
		var rec counterRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			rec = counterRecord{} // unreadable: start over
		}
		if !failed {
			err = c.kv.Delete(ctx, proxyID, jetstream.LastRevision(entry.Revision()))
			if err == nil {
				return 0, nil
			}
		} else {
			rec.Failures++
			rec.LastFailedAt = at.UTC()
			data, _ := json.Marshal(rec)
			if _, err = c.kv.Update(ctx, proxyID, data, entry.Revision()); err == nil {
				return rec.Failures, nil
			}
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("count check of %s: %w", proxyID, err)
		}
		lastErr = err
	}
	return 0, model.Errorf(model.ErrUnavailable, "failure counter of %s kept changing: %w", proxyID, lastErr)
}

// failures reads a proxy's consecutive failures.
func (c *counters) failures(ctx context.Context, proxyID string) (int, error) {
	entry, err := c.kv.Get(ctx, proxyID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var rec counterRecord
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return 0, err
	}
	return rec.Failures, nil
}
