package periodic_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pharox/pharox-nats/internal/periodic"
)

// TestRun: fn runs again and again, and Run returns once ctx ends, after
// which fn runs no more.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		periodic.Run(ctx, 10*time.Millisecond, func() { calls.Add(1) })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fn ran %d times in 10s", calls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	n := calls.Load()
	time.Sleep(50 * time.Millisecond)
	if m := calls.Load(); m != n {
		t.Fatalf("fn ran after Run returned: %d then %d", n, m)
	}
}
