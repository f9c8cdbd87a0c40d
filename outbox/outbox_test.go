package outbox_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/outbox"
)

// TestEncodeIsJSONMarshal: Encode writes what json.Marshal of the entry
// writes, byte for byte, so workers of the version before it read its
// headers and it reads theirs; and Decode gives the entry back.
func TestEncodeIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 6, 2, 40, 1, 123456789, time.UTC)
	odd := "a <b> & \"c\"\n\u2028é\x01"
	outcome := model.OutcomeFailure
	lease := func() *model.Lease {
		return &model.Lease{ID: "l1", ProxyID: "p1", PoolID: "pool-id", PoolName: odd, ConsumerID: "c1", ConsumerName: "crawler",
			Status: model.LeaseActive, AcquiredAt: at, ExpiresAt: at.Add(time.Minute), FencingToken: 42}
	}
	stats := &model.PoolStatsSnapshot{PoolName: odd, TotalProxies: 3, ActiveProxies: 2}
	raw := json.RawMessage(`{ "from": "a newer worker", "x": [1, 2] }`)
	for name, e := range map[string]*outbox.Entry{
		"no events":    {Worker: "w1", At: at},
		"empty events": {Worker: "w1", At: at, Events: []outbox.Event{}},
		"every kind": {Worker: odd, At: at.In(time.FixedZone("x", 3600)), Events: []outbox.Event{
			{Name: model.EventAcquired, Payload: &model.AcquireEvent{Lease: lease(), PoolName: odd, ConsumerName: "c", Selector: model.SelectorRandom,
				StartedAt: at, CompletedAt: at, DurationMs: 1.25, PoolStats: stats}},
			{Name: model.EventReleased, Payload: &model.ReleaseEvent{Lease: lease(), PoolName: odd, ReleasedAt: at, Outcome: &outcome, Reason: &odd}},
			{Name: model.EventExpired, Payload: &model.ExpiredEvent{Lease: lease(), PoolName: odd, ExpiredAt: at}},
			{Name: model.EventRenewed, Payload: &model.RenewedEvent{Lease: lease(), PoolName: odd, PreviousExpiresAt: at}},
			{Name: model.EventCooldown, Payload: &model.CooldownEvent{ProxyID: "p1", PoolName: odd, ConsecutiveFailures: 3, CooldownUntil: at}},
			{Name: model.EventHealth, Payload: &model.HealthEvent{ProxyID: "p1", PoolName: odd, PreviousStatus: model.ProxyActive,
				Result: model.HealthCheckResult{ProxyID: "p1", Status: model.ProxyInactive, LatencyMs: 12.5, Protocol: model.ProtocolSOCKS5,
					Attempts: 2, CheckedAt: at, ErrorMessage: &odd}}},
			{Name: "future", Payload: &raw},
			{Name: "nothing", Payload: nil},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			want, err := json.Marshal(e)
			require.NoError(t, err)
			require.Equal(t, string(want), e.Encode())

			back, err := outbox.Decode(e.Encode())
			require.NoError(t, err)
			require.Equal(t, string(want), back.Encode(), "decoded and encoded again")
		})
	}
}

// TestEncodeRefusesWhatJSONRefuses: a value json.Marshal cannot write makes
// the whole entry "", as before.
func TestEncodeRefusesWhatJSONRefuses(t *testing.T) {
	e := &outbox.Entry{Worker: "w1", At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	require.Empty(t, e.Encode())
	e = &outbox.Entry{Worker: "w1", Events: []outbox.Event{{Name: "bad", Payload: func() {}}}}
	require.Empty(t, e.Encode())
}

func BenchmarkEncode(b *testing.B) {
	at := time.Now()
	l := &model.Lease{ID: "0b8c7f1e-8c1c-4a57-9d7e-0c2f0d3f4a11", ProxyID: "5f0c7f1e-8c1c-4a57-9d7e-0c2f0d3f4a11", PoolID: "pool-id", PoolName: "latam",
		ConsumerID: "c1", ConsumerName: "crawler", Status: model.LeaseActive, AcquiredAt: at, ExpiresAt: at.Add(time.Minute)}
	e := &outbox.Entry{Worker: "7d0c7f1e-8c1c-4a57-9d7e-0c2f0d3f4a11", At: at, Events: []outbox.Event{{Name: model.EventAcquired,
		Payload: &model.AcquireEvent{Lease: l, PoolName: "latam", ConsumerName: "crawler", Selector: model.SelectorFirstAvailable,
			StartedAt: at, CompletedAt: at, PoolStats: &model.PoolStatsSnapshot{PoolName: "latam", TotalProxies: 100, ActiveProxies: 100}}}}}
	b.Run("Encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = e.Encode()
		}
	})
	b.Run("json.Marshal", func(b *testing.B) { // what Encode replaced, for a ratio in the same run
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(e)
		}
	})
}
