// Package retry holds the one way pharox waits between attempts: a backoff
// that grows, with jitter, so that writers that collided do not collide
// again in step.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff grows from 1 ms to 32 ms with the attempt number.
func Backoff(attempt int) time.Duration {
	return time.Millisecond << min(attempt, 5)
}

// Sleep waits between d/2 and d, or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
