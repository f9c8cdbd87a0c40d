package kvstore

import (
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/record"
)

// Codec is how this store writes and reads proxy records (its credentials
// keys).
func (s *Store) Codec() *record.Codec { return s.codec }

// UnreadableCredentials counts the proxy versions the watch delivered
// whose credentials this worker could not decrypt (their key is not among
// its keys): such a proxy is not leased by this worker.
func (s *Store) UnreadableCredentials() uint64 { return s.unreadable.Load() }

// unreadableWarnEvery bounds the warnings about unreadable credentials: a
// worker started without the key of a 100,000-proxy pool logs a few lines,
// not 100,000.
const unreadableWarnEvery = 10 * time.Second

// noteUnreadable counts a proxy version whose credentials cannot be
// decrypted here and warns, at most once per unreadableWarnEvery, with the
// count so far. It names the key by its id, never the key.
func (s *Store) noteUnreadable(rec *record.Proxy) {
	n := s.unreadable.Add(1)
	now := time.Now().UnixNano()
	last := s.warned.Load()
	if last != 0 && now-last < int64(unreadableWarnEvery) || !s.warned.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("proxy credentials sealed with a key this worker does not have: the proxy is not leased by this worker, and admin requests that show it answer 503 (give the key in --credentials-key-file or PHAROX_CREDENTIALS_KEY)",
		zap.String("proxy_id", rec.ID), zap.String("pool", rec.PoolName), zap.String("key_id", rec.CredentialsKeyID()),
		zap.Uint64("unreadable_versions_so_far", n), zap.String("have_keys", keyIDs(s.codec)))
}

func keyIDs(c *record.Codec) string {
	ids := c.Ring().IDs()
	if len(ids) == 0 {
		return "none"
	}
	out := ids[0]
	for _, id := range ids[1:] {
		out += "," + id
	}
	return out
}
