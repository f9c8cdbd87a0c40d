package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// unreadable is the answer about a proxy whose credentials this worker
// cannot decrypt: 503 (another worker, with the key, can answer), never
// the proxy without them.
func unreadable(rec *record.Proxy) error {
	return model.Errorf(model.ErrUnavailable, "the credentials of proxy %s are sealed with key %s, which this worker does not have "+
		"(--credentials-key-file or PHAROX_CREDENTIALS_KEY); nothing was changed: ask again, a worker with the key can answer",
		rec.ID, rec.CredentialsKeyID())
}

// RekeyResult is what RekeyCredentials did.
type RekeyResult struct {
	// Proxies is how many proxies there were; Rewritten how many were
	// written again with their credentials sealed under the first key;
	// Current how many were already (or have no credentials); Gone how
	// many were deleted while it ran.
	Proxies, Rewritten, Current, Gone int
	// Unreadable are the proxies whose credentials are sealed with a key
	// this manager does not have: left as they are.
	Unreadable []string
	// Passes is how many times every proxy was looked at.
	Passes int
}

// rekeyPasses bounds the passes of RekeyCredentials: a pass finds what
// the previous one could not see (a worker still sealing with an older
// first key wrote meanwhile).
const rekeyPasses = 3

// RekeyCredentials rewrites every proxy whose credentials are not sealed
// under the store's first key (sealed under another key of the ring, or in
// clear) so that they are, each with the revision-checked write every
// change of a proxy goes through: a lease committed meanwhile is never
// lost, and an acquire that races a rewrite retries as after any lost race.
// concurrency writes run at once; progress, if not nil, is told after each
// proxy. It returns an error when the store has no key, or ctx ends.
func (m *Manager) RekeyCredentials(ctx context.Context, concurrency int, progress func(done, total int)) (RekeyResult, error) {
	var res RekeyResult
	codec := m.store.Codec()
	if codec.Ring() == nil {
		return res, errors.New("rekey: the store has no credentials key to seal with")
	}
	if concurrency < 1 {
		return res, fmt.Errorf("rekey: concurrency must be positive, got %d", concurrency)
	}
	for res.Passes < rekeyPasses {
		if err := m.syncProxies(ctx); err != nil {
			return res, err
		}
		res.Passes++
		ids := m.replica.ProxyIDs()
		var stale []string
		current, unreadableIDs := 0, []string(nil)
		for _, id := range ids {
			rec, _, ok := m.replica.Proxy(id)
			switch {
			case !ok:
			case codec.Current(rec):
				current++
			case rec.CredentialsUnreadable():
				unreadableIDs = append(unreadableIDs, id)
			default:
				stale = append(stale, id)
			}
		}
		if res.Passes == 1 {
			res.Proxies, res.Current = len(ids), current
		}
		res.Unreadable = unreadableIDs
		if len(stale) == 0 {
			return res, nil
		}
		written, gone, err := m.rekey(ctx, stale, concurrency, progress)
		res.Rewritten += written
		res.Gone += gone
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// rekey rewrites the proxies ids with concurrency writes at once.
func (m *Manager) rekey(ctx context.Context, ids []string, concurrency int, progress func(done, total int)) (written, gone int, err error) {
	codec := m.store.Codec()
	var mu sync.Mutex
	var errs []error
	done := 0
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(concurrency, len(ids)) {
		wg.Go(func() {
			for id := range next {
				mut, err := m.mutateProxy(ctx, id, func(r *record.Proxy, _ time.Time) ([]outbox.Event, error) {
					if r.CredentialsUnreadable() || codec.Current(r) {
						return nil, errNoChange
					}
					return nil, nil // written again: the write seals with the first key
				})
				mu.Lock()
				switch {
				case errors.Is(err, model.ErrProxyNotFound):
					gone++
				case err != nil:
					errs = append(errs, fmt.Errorf("proxy %s: %w", id, err))
				case mut.written:
					written++
				}
				done++
				if progress != nil {
					progress(done, len(ids))
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		mu.Lock()
		failing := len(errs) > 16
		mu.Unlock()
		if failing || ctx.Err() != nil {
			break
		}
		select {
		case next <- id:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		m.log.Warn("rekey: proxies not rewritten", zap.Int("failed", len(errs)))
		return written, gone, fmt.Errorf("rekey: %w", errors.Join(errs...))
	}
	return written, gone, nil
}
