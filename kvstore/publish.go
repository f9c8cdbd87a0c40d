package kvstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/internal/retry"
)

const (
	// publishAttempt bounds one attempt of a revision-checked proxy
	// write. JetStream answers a stored write with one acknowledgement,
	// and on a cluster that answer can be lost (in an R3 run under load,
	// one write in a few hundred around a node's restart waited out the
	// whole 20 s request deadline, holding its proxy's turn): a write
	// unanswered after this long is sent again.
	publishAttempt = 2 * time.Second
	// settleFor is how long a write that may have been stored is sent
	// again after its request gave up, to learn whether it was: longer
	// than a leader election after a SIGKILL (measured 4-9 s).
	settleFor = 15 * time.Second
)

// publishCAS stores msg on the proxies stream if the key's last sequence
// is base, and returns its sequence; ErrRevisionConflict when another
// write came first.
//
// Every attempt carries the same Nats-Msg-Id. A clustered stream checks it
// before the revision: an attempt sent again after an earlier one was
// stored is answered with the earlier one's sequence (a duplicate), not
// with a conflict, even when other writes have followed it. A stream that
// is not clustered (a single server) checks the revision first and answers
// a conflict; a conflict after an unanswered attempt is therefore settled
// by the key's last message: if it carries the write's message id, the
// write was stored. So a write is sent again, with the same answer either
// way, until it gets one; one that may have been stored when its request
// gives up is sent again for up to settleFor, on a context of its own, so
// that a request that fails leaves nothing behind.
func (s *Store) publishCAS(ctx context.Context, msg *nats.Msg, base uint64) (uint64, error) {
	msg.Header.Set(jetstream.MsgIDHeader, nuid.Next())
	rev, err, maybeStored := s.publishUntil(ctx, msg, base)
	if err == nil || !maybeStored {
		return rev, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleFor)
	defer cancel()
	rev, serr, maybeStored := s.publishUntil(sctx, msg, base)
	if serr == nil || !maybeStored {
		return rev, serr
	}
	s.log.Error("could not tell whether a proxy write was stored; a lease it added lapses at its expiry",
		zap.String("subject", msg.Subject), zap.Error(serr))
	return 0, err
}

// publishUntil sends msg until it gets an answer or ctx ends; maybeStored
// says that an attempt went unanswered, so it may have been stored.
func (s *Store) publishUntil(ctx context.Context, msg *nats.Msg, base uint64) (rev uint64, err error, maybeStored bool) {
	for attempt := 0; ; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			// Nothing is sent on a context that has ended: a request whose
			// deadline passed before its write leaves nothing to settle.
			if err == nil {
				err = cerr
			}
			return 0, err, maybeStored
		}
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		rev, err = s.publish(actx, msg, base)
		cancel()
		if errors.Is(err, ErrRevisionConflict) && maybeStored {
			// A stream that is not clustered checks the revision before
			// the message id: an attempt sent again after an earlier one
			// was stored conflicts with that earlier one instead of being
			// answered as its duplicate. The key's last message tells.
			var ours bool
			actx, cancel := context.WithTimeout(ctx, publishAttempt)
			rev, ours, err = s.storedAs(actx, msg)
			cancel()
			switch {
			case err == nil && ours:
				return rev, nil, false
			case err == nil || errors.Is(err, errNotFound):
				return 0, ErrRevisionConflict, false
			case !readAgain(err) || ctx.Err() != nil:
				return 0, err, maybeStored
			}
			// The read went unanswered: send the write again, and look
			// again if it conflicts.
			retry.Sleep(ctx, min(250*time.Millisecond, retry.Backoff(attempt+3)))
			continue
		}
		if err == nil || errors.Is(err, ErrRevisionConflict) {
			return rev, err, false
		}
		unanswered, again := attemptFailed(err)
		maybeStored = maybeStored || unanswered
		if !again || ctx.Err() != nil {
			return 0, err, maybeStored
		}
		retry.Sleep(ctx, min(250*time.Millisecond, retry.Backoff(attempt+3)))
	}
}

// storedAs reads the last message stored for msg's key from the stream's
// leader: its sequence, and whether it is msg (it carries msg's message
// id). A write stored and then followed by another's is not recognised.
func (s *Store) storedAs(ctx context.Context, msg *nats.Msg) (uint64, bool, error) {
	bucket, key, ok := strings.Cut(strings.TrimPrefix(msg.Subject, "$KV."), ".")
	if !ok {
		return 0, false, fmt.Errorf("kvstore: %q is not a key's subject", msg.Subject)
	}
	last, err := s.lastOnSubject(ctx, bucket, key)
	if err != nil {
		return 0, false, err
	}
	return last.Seq, hasMsgID(last.Hdrs, msg.Header.Get(jetstream.MsgIDHeader)), nil
}

// hasMsgID says whether a stored message's headers (NATS/1.0 and a
// "Name: value" line each) carry message id id.
func hasMsgID(hdrs []byte, id string) bool {
	if id == "" {
		return false
	}
	lines := strings.Split(string(hdrs), "\r\n")
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), jetstream.MsgIDHeader) && strings.TrimSpace(value) == id {
			return true
		}
	}
	return false
}

// attemptFailed sorts a failed publish: unanswered (it may have been
// stored) and whether sending it again can help.
func attemptFailed(err error) (unanswered, again bool) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return true, true
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		// No server took it: the stream has no leader right now.
		return false, true
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(10158):
		// The same message id is being stored right now: ask again.
		return true, true
	case errors.As(err, &apiErr) && apiErr.Code == 503:
		return false, true
	}
	return false, false
}
