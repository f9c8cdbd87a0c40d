package replica

import (
	"time"

	"github.com/pharox/pharox-nats/model"
)

// leaseIndex finds a lease by its id alone. An active lease lives only as a
// holder in its proxy's record (no record of its own until it ends), so
// release, renew and reads on any worker look it up here: which proxy holds
// it now, or, for a holder that just disappeared, what it looked like last.
// It only proposes, like the rest of the replica: the proxy's
// revision-checked write decides.
type leaseIndex struct {
	active map[string]string // lease id -> proxy id
	// ended keeps the last active view of holders removed recently, so that
	// a read landing between the write that removed a holder and the write
	// of its ending record knows the lease exists and waits for the record.
	ended map[string]endedHolder
	ring  []string
	next  int
}

type endedHolder struct {
	last model.Lease
	at   time.Time // when this replica saw the holder go, by the wall clock
}

// DefaultEndedWindow is how long after a holder's removal a missing ending
// record is waited for, the lease meanwhile told from its last holder. The
// committing worker writes the record right after the removal; if it died
// first, another worker's relay writes it once that worker is judged dead
// (3 s without a heartbeat, see the events package) and its turn comes, so
// the window covers that with room to spare. Past it (or once its
// retention is over) a missing record means the lease is gone.
const DefaultEndedWindow = 15 * time.Second

func newLeaseIndex(remember int) *leaseIndex {
	return &leaseIndex{active: map[string]string{}, ended: map[string]endedHolder{}, ring: make([]string, remember)}
}

// update moves the index from old to new (either may be nil). Callers hold
// the replica's write lock.
func (x *leaseIndex) update(old, new *proxyEntry) {
	if old != nil && len(old.rec.Holders) > 0 {
		var kept map[string]bool
		if new != nil && len(new.rec.Holders) > 0 {
			kept = make(map[string]bool, len(new.rec.Holders))
			for i := range new.rec.Holders {
				kept[new.rec.Holders[i].LeaseID] = true
			}
		}
		for i := range old.rec.Holders {
			h := old.rec.Holders[i]
			if kept[h.LeaseID] {
				continue
			}
			delete(x.active, h.LeaseID)
			x.remember(old.rec.LeaseFor(h, old.rev, model.LeaseActive))
		}
	}
	if new != nil {
		for i := range new.rec.Holders {
			x.active[new.rec.Holders[i].LeaseID] = new.rec.ID
		}
	}
}

func (x *leaseIndex) remember(l model.Lease) {
	if old := x.ring[x.next]; old != "" {
		delete(x.ended, old)
	}
	x.ring[x.next] = l.ID
	x.next = (x.next + 1) % len(x.ring)
	x.ended[l.ID] = endedHolder{last: l, at: time.Now()}
}
