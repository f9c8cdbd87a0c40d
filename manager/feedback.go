package manager

import (
	"context"
	"errors"
	"time"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
	"github.com/pharox/pharox-nats/record"
)

// CooldownCallback receives the payload of a cooldown event: a release that
// reported a failure set or moved its proxy's cooldown_until.
type CooldownCallback func(model.CooldownEvent)

// RegisterCooldownCallback adds fn to the hooks run when a release sets or
// moves a proxy's cooldown.
func (m *Manager) RegisterCooldownCallback(fn CooldownCallback) {
	addHook(m, &m.onCooldown, fn)
}

// feedback is what a release's outcome did to its proxy's record.
type feedback struct {
	cooled bool // cooldown_until was set or moved
}

// recordOutcome applies a release's outcome to the record the releasing
// write is based on, at now: a failure counts one more consecutive failure
// and, once they reach the pool's threshold, cools the proxy down for
// min(seconds x 2^(failures - threshold), max_seconds), keeping a later
// cooldown already set; a success resets the count and leaves a running
// cooldown as it is. It runs inside the revision-checked write, so
// concurrent releases of one proxy each count: none is lost.
func recordOutcome(rec *record.Proxy, outcome *model.Outcome, cooldown *model.Cooldown, now time.Time) feedback {
	if outcome == nil {
		return feedback{}
	}
	if *outcome == model.OutcomeSuccess {
		rec.ConsecutiveFailures = 0
		return feedback{}
	}
	rec.ConsecutiveFailures++
	d := cooldown.Backoff(rec.ConsecutiveFailures)
	if d <= 0 {
		return feedback{}
	}
	until := now.Add(d).UTC()
	if rec.CooldownUntil != nil && !until.After(*rec.CooldownUntil) {
		return feedback{}
	}
	rec.CooldownUntil = &until
	return feedback{cooled: true}
}

// poolCooldown is a pool's cooldown setting as this worker's replica has
// it, read from the bucket's leader only when the replica does not know the
// pool yet. A setting changed on another worker a moment ago may reach this
// replica a few milliseconds after the change was acknowledged; a leader
// read on every failure would close that window at the price of a third of
// the throughput of failure releases (measured with cmd/bench, scenario 8).
// A pool gone meanwhile has none (its proxies go too).
func (m *Manager) poolCooldown(ctx context.Context, pool string) (*model.Cooldown, error) {
	rec, err := m.poolExists(ctx, pool)
	if errors.Is(err, model.ErrPoolNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return rec.Cooldown, nil
}

// cooldownEvent is the event of a release that set or moved rec's
// cooldown_until (rec as the release writes it).
func cooldownEvent(rec *record.Proxy, reason *string) outbox.Event {
	return outbox.Event{Name: model.EventCooldown, Payload: &model.CooldownEvent{ProxyID: rec.ID, PoolName: rec.PoolName,
		ConsecutiveFailures: rec.ConsecutiveFailures, CooldownUntil: rec.CooldownUntil.UTC(), Reason: reason}}
}
