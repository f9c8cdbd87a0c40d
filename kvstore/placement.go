package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pharox/pharox-nats/internal/retry"
)

// Leader placement. On a cluster each shard's proxies stream has its own
// raft leader, through which every lease write of the shard's pools goes;
// elections put them anywhere (three leaders on three nodes only 6 times
// in 27). SpreadLeaders moves them apart with leader step-downs that name
// the preferred new leader (a server of v2.11 or later honours the name;
// an older one picks a random peer, and the next round tries again).

// PlacementLockKey is the key, in the requests bucket, that the worker
// spreading the leaders holds while it does, so that workers starting
// together do not undo each other's moves. It has no dot, so no
// idempotency key (consumer "." request id) can be it.
const PlacementLockKey = "pharox-spread-leaders"

const (
	// placementLockStale: a lock older than this is taken over (its
	// holder died half-way).
	placementLockStale = 30 * time.Second
	// placementRounds bounds the rounds of step-downs.
	placementRounds = 4
	// placementSettle bounds the wait for one round's step-downs to take.
	placementSettle = 2 * time.Second
	// placementRequest bounds one stream info or step-down request.
	placementRequest = time.Second
	// placementPoll bounds one stream info while waiting for a new
	// leader: one sent while the leadership changes hands goes
	// unanswered, and is asked again sooner.
	placementPoll = 100 * time.Millisecond
)

// Placement is where the proxies streams' leaders are.
type Placement struct {
	// Streams are the proxies streams, shard by shard.
	Streams []string
	// Leaders are their leaders (server names), shard by shard; "" for a
	// stream without a leader, or on a server that is not clustered.
	Leaders []string
	// Moved says what was moved: "KV_PHAROX_PROXIES_1 n1->n3".
	Moved []string
	// StepDowns is the number of step-downs asked for.
	StepDowns int
	// Balanced: no stream's leader leads two or more streams more than
	// another online peer of that stream does, so no step-down would
	// spread them further.
	Balanced bool
	// Skipped says why nothing was looked at or moved ("" when
	// SpreadLeaders placed them or found them placed).
	Skipped string
	// Took is how long SpreadLeaders took.
	Took time.Duration
}

// Counts is how many proxies streams each server leads.
func (p Placement) Counts() map[string]int {
	out := map[string]int{}
	for _, l := range p.Leaders {
		if l != "" {
			out[l]++
		}
	}
	return out
}

// streamPeers is what placement needs of a stream: its leader and the
// peers that could take over (online).
type streamPeers struct {
	leader string
	peers  []string
}

// planMoves picks step-downs that spread the leaders: a stream whose
// leader leads at least two more streams than one of the stream's
// online peers moves to the least loaded such peer (by name on a tie),
// one move per stream, until no move would spread them further.
func planMoves(streams []streamPeers) map[int]string {
	counts := map[string]int{}
	for _, st := range streams {
		for _, p := range st.peers {
			counts[p] += 0
		}
		if st.leader != "" {
			counts[st.leader]++
		}
	}
	moves := map[int]string{}
	for {
		best, to := -1, ""
		for i, st := range streams {
			if _, moved := moves[i]; moved || st.leader == "" {
				continue
			}
			for _, p := range st.peers {
				if p == st.leader || counts[p] > counts[st.leader]-2 {
					continue
				}
				if to == "" || counts[p] < counts[to] || (counts[p] == counts[to] && p < to) {
					best, to = i, p
				}
			}
			if best != -1 {
				break
			}
		}
		if best == -1 {
			return moves
		}
		counts[streams[best].leader]--
		counts[to]++
		moves[best] = to
	}
}

// SpreadLeaders spreads the leaders of the proxies streams over the
// cluster's servers, when there are several shards on a cluster: it reads
// each stream's leader and peers, and asks a stream led by a server that
// leads more than its share to step down in favour of a peer that leads
// less, in a few rounds, until they are spread or ctx ends (bound it: a
// few seconds). Streams already spread cost one stream info each and no
// write. Before it moves anything it takes the placement lock (a key in
// the requests bucket); when another worker holds it, it returns at once
// with Skipped set. A step-down leaves the stream without a leader for a
// moment (milliseconds on a healthy cluster): writes of that shard wait
// for, or retry through, the new leader as through any election.
func (s *Store) SpreadLeaders(ctx context.Context) (p Placement, err error) {
	start := time.Now()
	p.Streams = s.ProxyStreams()
	defer func() { p.Took = time.Since(start) }()
	if len(s.shards) < 2 {
		p.Skipped, p.Balanced = "one shard", true
		p.Leaders = make([]string, len(s.shards))
		return p, nil
	}
	streams, err := s.streamPeers(ctx)
	p.Leaders = leadersOf(streams)
	if err != nil {
		return p, err
	}
	if !clustered(streams) {
		p.Skipped, p.Balanced = "not replicated", true
		return p, nil
	}
	if len(planMoves(streams)) == 0 {
		p.Balanced = true
		return p, nil
	}
	release, holder, err := s.lockPlacement(ctx)
	if err != nil {
		return p, err
	}
	if release == nil {
		p.Skipped = "another worker is placing them (" + holder + ")"
		return p, nil
	}
	defer release()

	for round := 0; round < placementRounds; round++ {
		// Read again: before the lock was ours, another worker may have
		// moved them.
		streams, err = s.streamPeers(ctx)
		p.Leaders = leadersOf(streams)
		if err != nil {
			return p, err
		}
		moves := planMoves(streams)
		if len(moves) == 0 {
			p.Balanced = true
			return p, nil
		}
		var errs []error
		for i, to := range moves {
			p.StepDowns++
			if err := s.stepDown(ctx, p.Streams[i], to); err != nil {
				errs = append(errs, err)
				continue
			}
			p.Moved = append(p.Moved, fmt.Sprintf("%s %s->%s", p.Streams[i], streams[i].leader, to))
		}
		slices.Sort(p.Moved)
		if err := ctx.Err(); err != nil {
			return p, errors.Join(append(errs, err)...)
		}
		if len(errs) == len(moves) {
			// Not one was taken (refused, or unanswered as for a user
			// not allowed $JS.API.STREAM.LEADER.STEPDOWN.<stream>): more
			// rounds would only delay the start.
			return p, errors.Join(errs...)
		}
		s.awaitLeaders(ctx, moves)
	}
	streams, err = s.streamPeers(ctx)
	p.Leaders = leadersOf(streams)
	p.Balanced = err == nil && len(planMoves(streams)) == 0
	return p, err
}

func leadersOf(streams []streamPeers) []string {
	out := make([]string, len(streams))
	for i, st := range streams {
		out[i] = st.leader
	}
	return out
}

// clustered: some stream has peers to hand its leadership to.
func clustered(streams []streamPeers) bool {
	for _, st := range streams {
		if len(st.peers) > 1 {
			return true
		}
	}
	return false
}

// streamPeers reads every proxies stream's leader and online peers
// (the leader among them; raft hands leadership to any live peer, which
// catches up first), asking again while one has no leader.
func (s *Store) streamPeers(ctx context.Context) ([]streamPeers, error) {
	out := make([]streamPeers, len(s.shards))
	for i, sh := range s.shards {
		for attempt := 0; ; attempt++ {
			info, err := s.streamInfo(ctx, sh.stream, placementRequest)
			if err == nil && (info.Cluster == nil || info.Cluster.Leader != "" || len(info.Cluster.Replicas) == 0) {
				if info.Cluster != nil && info.Cluster.Leader != "" {
					out[i].leader = info.Cluster.Leader
					out[i].peers = []string{info.Cluster.Leader}
					for _, r := range info.Cluster.Replicas {
						if !r.Offline {
							out[i].peers = append(out[i].peers, r.Name)
						}
					}
				}
				break
			}
			var apiErr *jetstream.APIError
			again := err == nil || readAgain(err) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
				(errors.As(err, &apiErr) && apiErr.Code == 503)
			if !again || ctx.Err() != nil {
				if err == nil {
					err = fmt.Errorf("stream %s: %w", sh.stream, errNoLeader)
				}
				return out, storeErr("placement", err)
			}
			retry.Sleep(ctx, min(250*time.Millisecond, retry.Backoff(attempt+3)))
		}
	}
	return out, nil
}

func (s *Store) streamInfo(ctx context.Context, stream string, timeout time.Duration) (*jetstream.StreamInfo, error) {
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := s.js.Stream(ictx, stream)
	if err != nil {
		return nil, err
	}
	return st.CachedInfo(), nil
}

// stepDown asks stream's leader to step down in favour of server to.
func (s *Store) stepDown(ctx context.Context, stream, to string) error {
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	rctx, cancel := context.WithTimeout(ctx, placementRequest)
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, req)
	if err != nil {
		return storeErr("step down "+stream, err)
	}
	var resp struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("step down %s: decode reply: %w", stream, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("step down %s: jetstream error %d (%d): %s", stream, resp.Error.Code, resp.Error.ErrCode, resp.Error.Desc)
	}
	return nil
}

// awaitLeaders waits, at most placementSettle, until every moved stream
// is led by the server it was moved to.
func (s *Store) awaitLeaders(ctx context.Context, moves map[int]string) {
	wctx, cancel := context.WithTimeout(ctx, placementSettle)
	defer cancel()
	for {
		done := true
		for i, to := range moves {
			info, err := s.streamInfo(wctx, s.shards[i].stream, placementPoll)
			if err != nil || info.Cluster == nil || info.Cluster.Leader != to {
				done = false
				break
			}
		}
		if done || wctx.Err() != nil {
			return
		}
		retry.Sleep(wctx, 25*time.Millisecond)
	}
}

type placementLock struct {
	Holder string    `json:"holder"`
	At     time.Time `json:"at"`
}

// lockPlacement takes the placement lock: release gives it back; a nil
// release with the holder's name means another worker holds it.
func (s *Store) lockPlacement(ctx context.Context) (release func(), holder string, err error) {
	host, _ := os.Hostname()
	me := placementLock{Holder: fmt.Sprintf("%s pid %d", host, os.Getpid()), At: time.Now().UTC()}
	data, _ := json.Marshal(me)
	rev, err := s.requests.Create(ctx, PlacementLockKey, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		var cur placementLock
		var curRev uint64
		curRev, err = s.getJSON(ctx, s.requests, PlacementLockKey, &cur)
		switch {
		case errors.Is(err, errNotFound):
			rev, err = s.requests.Create(ctx, PlacementLockKey, data) // given back in between
		case err != nil:
		case time.Since(cur.At) < placementLockStale:
			return nil, strings.TrimSpace(cur.Holder + " since " + cur.At.Format(time.RFC3339)), nil
		default:
			rev, err = s.requests.Update(ctx, PlacementLockKey, data, curRev)
		}
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, "another worker, just now", nil
	}
	if err != nil {
		return nil, "", storeErr("placement lock", err)
	}
	return func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), placementRequest)
		defer cancel()
		_ = s.requests.Delete(dctx, PlacementLockKey, jetstream.LastRevision(rev))
	}, "", nil
}
