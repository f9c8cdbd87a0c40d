package manager

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff grows from 1 ms to 32 ms; sleepJitter spreads it so that writers
// that collided do not collide again in step.
func backoff(attempt int) time.Duration {
	return time.Millisecond << min(attempt, 5)
}

// sleepJitter waits between d/2 and d, or until ctx ends.
func sleepJitter(ctx context.Context, d time.Duration) {
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
