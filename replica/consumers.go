package replica

import (
	"time"

	"github.com/pharox/pharox-nats/record"
)

// consumerCounts are the active leases of each consumer (by name) over
// every pool, kept up to date like the pool counts: on every version
// installed (its holders live at the counts' time replace the old
// version's) and on every lease expiry the counts are advanced past. A
// consumer with none has no entry. The zero value is ready to use.
type consumerCounts struct {
	m map[string]int32
}

// count adds sign for each holder of rec live at t. Callers hold r.mu.
func (c *consumerCounts) count(rec *record.Proxy, t time.Time, sign int) {
	for i := range rec.Holders {
		if rec.Holders[i].ExpiresAt.After(t) {
			c.add(rec.Holders[i].ConsumerName, sign)
		}
	}
}

func (c *consumerCounts) add(consumer string, sign int) {
	if c.m == nil {
		c.m = map[string]int32{}
	}
	n := c.m[consumer] + int32(sign)
	if n == 0 {
		delete(c.m, consumer)
		return
	}
	c.m[consumer] = n
}

// ConsumerLeases is the number of active leases consumer holds over every
// pool, as of the last Advance: what the per-consumer limit is checked
// against. It costs a map read, whatever the number of proxies and leases.
func (r *Replica) ConsumerLeases(consumer string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return int(r.consumers.m[consumer])
}
