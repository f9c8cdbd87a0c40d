package kvstore

import (
	"context"
	"fmt"
	"time"
)

// LastWrite is the bucket's last stream sequence and when the stream
// stored it (zero time for an empty stream): what replica lag is measured
// against.
func (s *Store) LastWrite(ctx context.Context, bucket string) (uint64, time.Time, error) {
	kv, ok := s.byName[bucket]
	if !ok {
		return 0, time.Time{}, fmt.Errorf("kvstore: no bucket %s in this store", bucket)
	}
	state, err := s.streamState(ctx, kv)
	if err != nil {
		return 0, time.Time{}, err
	}
	return state.LastSeq, state.LastTime, nil
}
