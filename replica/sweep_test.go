package replica

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// The sweep's list comes from the lease index: each proxy with an expired
// holder once (however many holders it has), none without one, and a
// proxy whose holders went away is not listed.
func TestWithExpiredHolders(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	pool := &record.Pool{ID: uuid.NewString(), Name: "sweep"}
	r := New()
	r.InstallPool(pool.Name, pool, 1)
	holder := func(exp time.Time) record.Holder {
		return record.Holder{LeaseID: uuid.NewString(), ConsumerID: "c", ConsumerName: "c", AcquiredAt: now.Add(-time.Hour), ExpiresAt: exp}
	}
	mk := func(seq uint64, hs ...record.Holder) *record.Proxy {
		p := record.NewProxy(pool, seq, model.ProxyInput{Host: "10.0.0.1", Port: 8000 + int(seq)})
		p.Holders = hs
		return p
	}
	twoExpired := mk(1, holder(now.Add(-time.Minute)), holder(now.Add(-time.Second)))
	oneLive := mk(2, holder(now.Add(time.Minute)))
	mixed := mk(3, holder(now.Add(time.Minute)), holder(now.Add(-time.Minute)))
	none := mk(4)
	released := mk(5, holder(now.Add(-time.Minute)))
	for i, p := range []*record.Proxy{twoExpired, oneLive, mixed, none, released} {
		r.InstallProxy(p.ID, p, uint64(10+i))
	}
	after := *released
	after.Holders = nil
	r.InstallProxy(after.ID, &after, 20)

	got := map[string]int{}
	for _, id := range r.WithExpiredHolders(now) {
		got[id]++
	}
	want := map[string]int{twoExpired.ID: 1, mixed.ID: 1}
	if len(got) != len(want) || got[twoExpired.ID] != 1 || got[mixed.ID] != 1 {
		t.Fatalf("got %v, want %v", got, want)
	}
	if ids := r.WithExpiredHolders(now.Add(-2 * time.Minute)); len(ids) != 0 {
		t.Fatalf("nothing expired two minutes earlier, got %v", ids)
	}
}
