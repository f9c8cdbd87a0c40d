package replica

import (
	"time"

	"github.com/pharox/pharox-nats/model"
)

// statuses are the proxy statuses counted per pool, in the order of
// poolCounts.byStatus; a status the replica does not know (a newer
// contract's) is counted under the last, "other".
var statuses = [...]model.ProxyStatus{model.ProxyActive, model.ProxyInactive, model.ProxySlow, model.ProxyBanned, "other"}

const numStatuses = len(statuses)

func statusIndex(s model.ProxyStatus) uint8 {
	for i, st := range statuses[:numStatuses-1] {
		if st == s {
			return uint8(i)
		}
	}
	return uint8(numStatuses - 1)
}

// PoolGauges is what a metrics scrape reads of one pool: its statistics and
// its proxies by status.
type PoolGauges struct {
	Stats    model.PoolStatsSnapshot
	ByStatus map[model.ProxyStatus]int // every status, zeros included
}

// Gauges returns every pool's gauges as of the last Advance, from the
// counts kept incrementally: a scrape costs the number of pools, not of
// proxies.
func (r *Replica) Gauges(now time.Time) []PoolGauges {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]PoolGauges, 0, len(r.pools))
	for name, e := range r.pools {
		if e.rec.Deleted {
			continue
		}
		c := r.poolCounts(e.rec.ID)
		g := PoolGauges{Stats: c.snapshot(name, now), ByStatus: make(map[model.ProxyStatus]int, numStatuses)}
		for i, st := range statuses {
			if i < numStatuses-1 || c.byStatus[i] != 0 {
				g.ByStatus[st] = c.byStatus[i]
			}
		}
		out = append(out, g)
	}
	return out
}
