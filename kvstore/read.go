package kvstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
)

// errNotFound is internal: callers turn it into the contract's not-found error.
var errNotFound = errors.New("key not found")

// leaderGet reads the latest value of key from the stream leader. KV buckets
// allow direct gets, which a replica still catching up may answer with a
// stale value; a read that a decision rests on (a CAS base, "this lease is no
// longer held") must see the latest write, so it goes through the leader.
//
// A read changes nothing, so it is simply asked again until ctx ends when
// it goes unanswered or the stream has no leader: on a cluster, a request
// that reached a leader which then stepped down or died is never answered,
// and waiting for it would hold the caller (and, for a CAS base, the
// proxy's turn) for the whole request deadline.
func (s *Store) leaderGet(ctx context.Context, kv jetstream.KeyValue, key string) ([]byte, uint64, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		data, rev, err := s.leaderGetOnce(actx, kv, key)
		cancel()
		if err == nil || errors.Is(err, errNotFound) || !readAgain(err) || ctx.Err() != nil {
			return data, rev, err
		}
		retry.Sleep(ctx, min(250*time.Millisecond, retry.Backoff(attempt+3)))
	}
}

// errNoLeader is a stream's answer while it elects a leader.
var errNoLeader = errors.New("stream has no leader")

// readAgain says whether a read that failed with err may succeed if asked
// again: it went unanswered, or no server could take it right now.
func readAgain(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, errNoLeader)
}

func (s *Store) leaderGetOnce(ctx context.Context, kv jetstream.KeyValue, key string) ([]byte, uint64, error) {
	bucket := kv.Bucket()
	msg, err := s.lastOnSubject(ctx, bucket, key)
	if err != nil {
		return nil, 0, err
	}
	// Delete and purge markers, and TTL markers, carry a header and no value.
	if bytes.Contains(msg.Hdrs, []byte("KV-Operation")) || bytes.Contains(msg.Hdrs, []byte("Nats-Marker-Reason")) {
		return nil, msg.Seq, errNotFound
	}
	return msg.Data, msg.Seq, nil
}

// storedMsg is a message as the stream's leader answers a get.
type storedMsg struct {
	Seq  uint64 `json:"seq"`
	Hdrs []byte `json:"hdrs"`
	Data []byte `json:"data"`
}

// lastOnSubject reads the last message stored for key of bucket (a value
// or a marker) from the stream's leader, in one request; errNotFound when
// there is none.
func (s *Store) lastOnSubject(ctx context.Context, bucket, key string) (*storedMsg, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	msg, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, storeErr("get "+bucket+"/"+key, err)
	}
	var resp struct {
		Error   *apiError  `json:"error"`
		Message *storedMsg `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("get %s/%s: decode reply: %w", bucket, key, err)
	}
	if resp.Error != nil {
		if resp.Error.Code == 404 {
			return nil, errNotFound
		}
		if resp.Error.Code == 503 {
			return nil, storeErr("get "+bucket+"/"+key, fmt.Errorf("%w: %s", errNoLeader, resp.Error.Desc))
		}
		return nil, storeErr("get "+bucket+"/"+key, fmt.Errorf("jetstream error %d (%d): %s", resp.Error.Code, resp.Error.ErrCode, resp.Error.Desc))
	}
	if resp.Message == nil {
		return nil, errNotFound
	}
	return resp.Message, nil
}

// getJSON reads key from the leader into v.
func (s *Store) getJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	data, rev, err := s.leaderGet(ctx, kv, key)
	if err != nil {
		return rev, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return 0, fmt.Errorf("decode %s/%s: %w", kv.Bucket(), key, err)
	}
	return rev, nil
}

// Sequence is the last stream sequence the bucket has acknowledged: a reader
// whose watch has delivered it has seen every write acknowledged before.
func (s *Store) Sequence(ctx context.Context, bucket string) (uint64, error) {
	kv, ok := s.byName[bucket]
	if !ok {
		return 0, fmt.Errorf("kvstore: no bucket %s in this store", bucket)
	}
	state, err := s.streamState(ctx, kv)
	if err != nil {
		return 0, err
	}
	return state.LastSeq, nil
}

// streamState asks the bucket's stream leader for its state, again (as
// leaderGet does) when the request goes unanswered or the stream has no
// leader: a stream info sent to a leader that then died is never answered.
func (s *Store) streamState(ctx context.Context, kv jetstream.KeyValue) (jetstream.StreamState, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		st, err := kv.Status(actx)
		cancel()
		if err == nil {
			return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State, nil
		}
		var apiErr *jetstream.APIError
		leaderless := errors.As(err, &apiErr) && apiErr.Code == 503
		if errors.Is(err, jetstream.ErrStreamNotFound) || !(readAgain(err) || leaderless || errors.Is(err, jetstream.ErrNoStreamResponse)) || ctx.Err() != nil {
			return jetstream.StreamState{}, storeErr("status "+kv.Bucket(), err)
		}
		retry.Sleep(ctx, min(250*time.Millisecond, retry.Backoff(attempt+3)))
	}
}

func zapBucket(b string) zap.Field { return zap.String("bucket", b) }
func zapKey(k string) zap.Field    { return zap.String("key", k) }
func zapErr(err error) zap.Field   { return zap.Error(err) }

// apiError is the error a JetStream API answer carries: the requests this
// package makes by hand decode it.
type apiError struct {
	Code    int    `json:"code"`
	ErrCode int    `json:"err_code"`
	Desc    string `json:"description"`
}
