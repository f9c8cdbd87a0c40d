// Package periodic holds the one loop pharox's background work runs in:
// an action once every interval until the context ends.
package periodic

import (
	"context"
	"time"
)

// Run calls fn every interval, on the calling goroutine, until ctx ends;
// the first call is one interval after the start. A call that takes longer
// than the interval delays the next one rather than overlapping it (the
// ticks missed meanwhile are dropped, as a time.Ticker drops them).
func Run(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
