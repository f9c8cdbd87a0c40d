package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pharox/pharox-nats/model"
)

// A sticky session is one lease that every gateway instance finds through
// the acquire's request_id, derived from pool, consumer and session name:
// the contract returns the same lease for the same request_id and consumer
// while it is active, and starts a new one once it has ended. No gateway
// needs to know what another has cached, and no gateway releases a
// session's lease except after its proxy failed.
//
// Each gateway caches the lease it found, renews it on use once more than a
// third of sesstime has passed since its last renewal, and forgets it when
// it lapses, when a renewal says it ended, or when its proxy fails.

// sessionRequestID is the request_id of a session: "gw-" and 43 characters
// of base64url SHA-256, well inside the contract's 128.
func sessionRequestID(pool, consumer, session string) string {
	sum := sha256.Sum256([]byte(pool + "\x00" + consumer + "\x00" + session))
	return "gw-" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// session is one sticky session as this gateway knows it.
type session struct {
	requestID string
	mu        sync.Mutex // one acquire or renewal at a time
	lease     *model.Lease
	proxy     *model.Proxy
	seconds   int
	dur       time.Duration
	renewed   time.Time // (g.clock) when the request that last set expires_at was sent
	deadline  time.Time // (g.clock) when the lease lapses unless renewed
	// tr forwards the session's plain HTTP requests through its proxy,
	// keeping connections to it alive between requests: the lease is held
	// anyway, so an idle connection costs the proxy nothing it did not
	// grant.
	tr *http.Transport
	// conns forwards the requests that need neither a body streamed nor
	// an upgrade, with less work than tr (see keptConns).
	conns *keptConns
	// heldUntil is deadline in Unix nanoseconds while the session has a
	// lease, else 0: what the sessions gauge reads without s.mu (an
	// acquire may hold that for a while).
	heldUntil atomic.Int64
}

// mark publishes the session's deadline to the sessions gauge; s.mu is
// held.
func (s *session) mark() {
	if s.lease == nil {
		s.heldUntil.Store(0)
		return
	}
	s.heldUntil.Store(s.deadline.UnixNano())
}

// install makes lease the session's; s.mu is held.
func (s *session) install(g *Gateway, lease *model.Lease, proxy *model.Proxy) {
	s.clear()
	s.lease, s.proxy = lease, proxy
	s.tr = g.sessionTransport(*proxy)
	s.conns = g.keptConns(*proxy)
}

// clear forgets the session's lease and closes its idle connections;
// s.mu is held.
func (s *session) clear() {
	if s.tr != nil {
		s.tr.CloseIdleConnections()
		s.conns.closeIdle()
	}
	s.lease, s.proxy, s.tr, s.conns = nil, nil, nil, nil
	s.mark()
}

// sessions caches sessions by pool, consumer and session name: what their
// request_id is derived from, without hashing it on every request.
type sessions struct {
	mu        sync.Mutex
	m         map[sessionKey]*session
	lastSweep time.Time
}

type sessionKey struct{ pool, consumer, session string }

// sweepEvery is how often forgotten and lapsed sessions leave the cache.
const sweepEvery = time.Minute

// held counts the sessions whose lease has not lapsed at now.
func (ss *sessions) held(now time.Time) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := 0
	for _, s := range ss.m {
		if until := s.heldUntil.Load(); until != 0 && now.UnixNano() < until {
			n++
		}
	}
	return n
}

func (ss *sessions) get(key sessionKey, now time.Time) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[sessionKey]*session{}
	}
	if now.Sub(ss.lastSweep) > sweepEvery {
		ss.lastSweep = now
		for k, s := range ss.m {
			if !s.mu.TryLock() {
				continue
			}
			if s.lease == nil || now.After(s.deadline.Add(sweepEvery)) {
				s.clear()
				delete(ss.m, k)
			}
			s.mu.Unlock()
		}
	}
	s, ok := ss.m[key]
	if !ok {
		s = &session{requestID: sessionRequestID(key.pool, key.consumer, key.session)}
		ss.m[key] = s
	}
	return s
}

// sessionUse returns a use of sp's session lease: the cached one while it
// lasts (renewed if due), else the one the workers hold for the session's
// request_id, else a new one.
func (g *Gateway) sessionUse(ctx context.Context, sp *spec, exclude []string) (*use, *Error) {
	s := g.sessions.get(sessionKey{sp.pool, sp.consumer, sp.session}, g.clock())
	s.mu.Lock()
	defer s.mu.Unlock()
	seconds := sp.sesstime
	dur := time.Duration(seconds) * time.Second
	for range 3 {
		if s.lease != nil && (slices.Contains(exclude, s.proxy.ID) || !g.clock().Before(s.deadline)) {
			s.clear()
		}
		if s.lease == nil {
			id := s.requestID
			lease, proxy, sent, gerr := g.acquire(ctx, sp, exclude, &id, seconds)
			if gerr != nil {
				return nil, gerr
			}
			s.install(g, lease, proxy)
			s.seconds, s.dur = seconds, dur
			// A lease another gateway started may be older than our request.
			s.deadline = sent.Add(dur)
			if lease.ExpiresAt.Before(s.deadline) {
				s.deadline = lease.ExpiresAt
			}
			s.renewed = s.deadline.Add(-dur)
			s.mark()
		}
		if g.clock().Sub(s.renewed) <= s.dur/3 {
			return s.use(g, sp), nil
		}
		err := g.renewSession(ctx, s)
		switch {
		case err == nil:
			return s.use(g, sp), nil
		case leaseOver(err):
			s.clear() // ended elsewhere: the request_id starts a new one
		case g.clock().Before(s.deadline):
			g.log.Warn("session renewal failed; using its lease until expires_at", zap.String("lease_id", s.lease.ID), zap.Error(err))
			return s.use(g, sp), nil
		default:
			return nil, fromWorker(err)
		}
	}
	return nil, &Error{Status: http.StatusBadGateway, Code: "session_unstable", Message: "the session's lease kept ending while it was being renewed"}
}

// use is a use of s's lease; s.mu is held.
func (s *session) use(g *Gateway, sp *spec) *use {
	return &use{g: g, sp: sp, lease: *s.lease, proxy: *s.proxy, sess: s, tr: s.tr, conns: s.conns, dur: s.dur, renewed: s.renewed, deadline: s.deadline}
}

// renewSession renews s's lease for its sesstime; s.mu is held.
func (g *Gateway) renewSession(ctx context.Context, s *session) error {
	ctx, cancel := context.WithTimeout(ctx, g.requestTimeout)
	defer cancel()
	seconds := s.seconds
	consumer := s.lease.ConsumerName
	sent := g.clock()
	lease, err := g.leaser.Renew(ctx, model.RenewRequest{LeaseID: s.lease.ID, DurationSeconds: &seconds, ConsumerName: &consumer})
	if err != nil {
		return err
	}
	s.lease = &lease
	s.renewed, s.deadline = sent, sent.Add(s.dur)
	s.mark()
	return nil
}

// touchSession keeps a session alive for a use of its lease that lasts
// (a tunnel): it renews once due, and fails once the session has moved on
// from leaseID.
func (g *Gateway) touchSession(s *session, leaseID string) (renewed, deadline time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == nil || s.lease.ID != leaseID {
		return time.Time{}, time.Time{}, errReplaced
	}
	if g.clock().Sub(s.renewed) > s.dur/3 {
		if err := g.renewSession(context.Background(), s); err != nil {
			if leaseOver(err) {
				s.clear()
			}
			return time.Time{}, time.Time{}, err
		}
	}
	return s.renewed, s.deadline, nil
}

// failSession releases a session's lease after its proxy failed, so that
// the next request, on any gateway, starts a new one. It waits for the
// release: a request_id acquire sent before it lands would get the same
// lease back.
func (g *Gateway) failSession(s *session, lease model.Lease, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && s.lease.ID == lease.ID {
		s.clear()
	}
	g.release(lease, OutcomeFailure, reason)
}
