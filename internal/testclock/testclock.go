// Package testclock is a clock that tests move by hand, for workers whose
// leases must expire without waiting real seconds. Give its Now to
// kvstore.WithClock; every worker of a test may share one.
package testclock

import (
	"sync"
	"time"
)

// Clock is a clock moved by hand.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New starts a clock at the current time, to the millisecond.
func New() *Clock {
	return &Clock{now: time.Now().UTC().Truncate(time.Millisecond)}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// At starts a clock at t.
func At(t time.Time) *Clock { return &Clock{now: t.UTC()} }
