package kvstore

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LastWrite is the bucket's last stream sequence and when the stream
// stored it (zero time for an empty stream): what replica lag is measured
// against.
func (s *Store) LastWrite(ctx context.Context, bucket string) (uint64, time.Time, error) {
	kv, ok := s.byName[bucket]
	if !ok {
		return 0, time.Time{}, fmt.Errorf("kvstore: no bucket %s in this store", bucket)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, time.Time{}, storeErr("status "+bucket, err)
	}
	state := st.(*jetstream.KeyValueBucketStatus).StreamInfo().State
	return state.LastSeq, state.LastTime, nil
}
