package broker

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// probeJobs records what the intake did with each job.
type probeJobs struct {
	started  chan int
	refused  chan string
	finished map[int]chan struct{}
}

func newProbeJobs() *probeJobs {
	return &probeJobs{started: make(chan int, 16), refused: make(chan string, 16), finished: map[int]chan struct{}{}}
}

// job i of size bytes runs until finish(i).
func (p *probeJobs) job(i, size int) job {
	done := make(chan struct{})
	p.finished[i] = done
	return job{size: size,
		run:    func() { p.started <- i; <-done },
		refuse: func(why string) { p.refused <- why }}
}

func (p *probeJobs) finish(i int) { close(p.finished[i]) }

func (p *probeJobs) nextStarted(t *testing.T) int {
	t.Helper()
	select {
	case i := <-p.started:
		return i
	case <-time.After(5 * time.Second):
		t.Fatal("no job started")
		return -1
	}
}

// TestIntakeLine: two slots, a line of two requests or 10 bytes; the line
// is served first come first served as slots free up, a request over it is
// refused at once, a waiting acquire taking its slot back goes before the
// line, and stopping refuses the line and what comes after.
func TestIntakeLine(t *testing.T) {
	in := newIntake("test", 2, 2, 10)
	p := newProbeJobs()
	in.offer(p.job(0, 1))
	in.offer(p.job(1, 1))
	require.ElementsMatch(t, []int{0, 1}, []int{p.nextStarted(t), p.nextStarted(t)})
	in.offer(p.job(2, 4))
	in.offer(p.job(3, 4))
	in.offer(p.job(4, 1)) // a third in line
	require.Equal(t, "full", <-p.refused)
	p.finish(0)
	require.Equal(t, 2, p.nextStarted(t))
	in.offer(p.job(5, 7)) // 4 + 7 bytes in line: over 10
	require.Equal(t, "full", <-p.refused)
	in.offer(p.job(6, 6)) // 4 + 6: fits
	require.Empty(t, p.started)

	// Job 1 parks (a waiting acquire giving its slot back): job 3 starts.
	in.release()
	require.Equal(t, 3, p.nextStarted(t))
	// Job 1 takes a slot back before job 6, which was in line first.
	unparked := make(chan error, 1)
	go func() { unparked <- in.unpark(context.Background()) }()
	require.Eventually(t, func() bool { in.mu.Lock(); defer in.mu.Unlock(); return len(in.unparked) == 1 }, 5*time.Second, time.Millisecond)
	p.finish(2)
	require.NoError(t, <-unparked)
	require.Empty(t, p.started, "the line waits behind the waiter taking its slot back")
	p.finish(1)
	require.Equal(t, 6, p.nextStarted(t))

	// An unpark whose context ends takes a slot anyway, over the bound.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, in.unpark(ctx), context.Canceled)
	in.mu.Lock()
	require.Equal(t, 3, in.busy)
	in.mu.Unlock()
	in.release()

	in.offer(p.job(7, 1))
	in.stop()
	require.Equal(t, "stopping", <-p.refused, "the line is refused when stopping")
	in.offer(p.job(8, 1))
	require.Equal(t, "stopping", <-p.refused)
	p.finish(3)
	p.finish(6)
	require.Empty(t, p.started)
}

// TestIntakeKeepsSlotGoroutines: a slot's goroutine serves the next request
// too (its stack already grown), the next in line or one offered later,
// and ends when the intake stops.
func TestIntakeKeepsSlotGoroutines(t *testing.T) {
	in := newIntake("test", 1, 1, -1)
	ran := make(chan string, 3)
	release := make(chan struct{})
	in.offer(job{run: func() { <-release; ran <- goroutineID() }})
	in.offer(job{run: func() { ran <- goroutineID() }}) // in line behind the first
	close(release)
	first, second := <-ran, <-ran
	require.Equal(t, first, second, "the next in line runs on the goroutine that freed the slot")

	// Once that goroutine waits for work, a request offered goes to it.
	require.Eventually(t, func() bool { return strings.Contains(stacks(), "goroutine "+first+" [select") }, 5*time.Second, time.Millisecond)
	in.offer(job{run: func() { ran <- goroutineID() }})
	require.Equal(t, first, <-ran, "an idle slot goroutine takes the next request")

	in.stop()
	require.Eventually(t, func() bool { return !strings.Contains(stacks(), "goroutine "+first+" [") }, 5*time.Second, time.Millisecond,
		"the slot goroutine ends when the intake stops")
}

// goroutineID is the number of the goroutine calling it.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
