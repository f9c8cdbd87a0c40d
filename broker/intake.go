package broker

import (
	"context"
	"sync"
	"time"
)

// slotIdle is how long a slot's goroutine waits for its next request before
// it ends. A request served on a new goroutine grows that goroutine's stack
// from 8 KB to what decoding, the store's write and the reply take, copying
// it at every doubling: 4.8% of the bench process's CPU samples in its
// scenario 1 (workers and clients), when every request had a goroutine of
// its own. A goroutine kept for the next request has its stack already
// grown.
const slotIdle = 10 * time.Second

// intake admits requests to a bounded number of slots (goroutines serving
// them) with a bounded line of requests waiting for one; past the line's
// bounds a request is refused at once (the broker answers 503).
//
// The subscription's callback only offers the request and returns, so
// NATS's own pending queue for the subscription stays near empty: what
// the worker reads ahead is bounded here, and every request over the
// bound gets a reply instead of being dropped by NATS as a slow consumer
// (silence). The leasing and admin endpoints share one intake;
// admin.proxies.add, whose bodies are up to 1 MiB, has its own, so a flood
// of them waits in a line of its own and leaves leasing its slots.
type intake struct {
	name              string // what it takes in, for messages
	slots             int
	maxLine, maxBytes int // -1: no bound

	mu        sync.Mutex
	busy      int // slots taken, by requests served or waiters taking one back
	line      []job
	lineBytes int
	unparked  []chan struct{} // waiting acquires taking a slot back, first come first served
	stopped   bool

	// idle hands a job to a slot goroutine waiting for one, if any is;
	// quit (closed by stop) ends the waiting ones.
	idle chan job
	quit chan struct{}
}

// job is one request: run serves it in a slot; refuse answers it without
// serving it (why: "stopping" or "full").
type job struct {
	size   int
	run    func()
	refuse func(why string)
}

func newIntake(name string, slots, maxLine, maxBytes int) *intake {
	return &intake{name: name, slots: slots, maxLine: maxLine, maxBytes: maxBytes, idle: make(chan job), quit: make(chan struct{})}
}

// inUse is the number of slots taken now.
func (in *intake) inUse() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.busy
}

// offer serves j in a free slot, or puts it in line, or refuses it.
func (in *intake) offer(j job) {
	in.mu.Lock()
	switch {
	case in.stopped:
		in.mu.Unlock()
		j.refuse("stopping")
	case in.busy < in.slots && len(in.line) == 0:
		in.busy++
		in.mu.Unlock()
		in.dispatch(j)
	case (in.maxLine >= 0 && len(in.line) >= in.maxLine) || (in.maxBytes >= 0 && in.lineBytes+j.size > in.maxBytes):
		in.mu.Unlock()
		j.refuse("full")
	default:
		in.line = append(in.line, j)
		in.lineBytes += j.size
		in.mu.Unlock()
	}
}

// dispatch runs j, which has a slot, on a slot goroutine waiting for work,
// or on a new one.
func (in *intake) dispatch(j job) {
	select {
	case in.idle <- j:
	default:
		go in.serve(j)
	}
}

// serve runs j in the slot it was given and hands the slot on, then runs
// the next job it is handed (the next in line, or one dispatched to it),
// until none comes within slotIdle or the intake stops.
func (in *intake) serve(j job) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		j.run()
		next, ok := in.handOn(true)
		if ok {
			j = next
			continue
		}
		if timer == nil {
			timer = time.NewTimer(slotIdle)
		} else {
			timer.Reset(slotIdle)
		}
		select {
		case j = <-in.idle:
		case <-timer.C:
			return
		case <-in.quit:
			return
		}
	}
}

// release gives a slot back: to a waiting acquire taking one back first
// (it was admitted before anything in line), else to the next request in
// line.
func (in *intake) release() { in.handOn(false) }

// handOn gives a slot back and fills the free slots: a waiting acquire
// taking one back first, then the line. With keep, the first request
// from the line is returned for the caller, a slot goroutine that has
// just finished, to run itself.
func (in *intake) handOn(keep bool) (job, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.busy--
	var kept job
	ok := false
	for in.busy < in.slots {
		switch {
		case len(in.unparked) > 0:
			ch := in.unparked[0]
			in.unparked = in.unparked[1:]
			in.busy++
			close(ch)
		case len(in.line) > 0:
			j := in.line[0]
			in.line[0] = job{}
			in.line = in.line[1:]
			in.lineBytes -= j.size
			in.busy++
			if keep && !ok {
				kept, ok = j, true
				continue
			}
			in.dispatch(j)
		default:
			return kept, ok
		}
	}
	return kept, ok
}

// unpark takes a slot for a waiting acquire that had given its own back,
// waiting for one until ctx ends; then it takes one anyway (the serving
// goroutine releases it once its reply is sent) and returns ctx's error.
func (in *intake) unpark(ctx context.Context) error {
	in.mu.Lock()
	if in.busy < in.slots {
		in.busy++
		in.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	in.unparked = append(in.unparked, ch)
	in.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, c := range in.unparked {
		if c == ch {
			in.unparked = append(in.unparked[:i], in.unparked[i+1:]...)
			in.busy++ // over the bound for the moment it takes to answer
			return ctx.Err()
		}
	}
	return ctx.Err() // handed a slot just as ctx ended
}

// stop refuses what is in line and everything offered from now on.
func (in *intake) stop() {
	in.mu.Lock()
	if !in.stopped {
		close(in.quit)
	}
	in.stopped = true
	line := in.line
	in.line, in.lineBytes = nil, 0
	in.mu.Unlock()
	for _, j := range line {
		j.refuse("stopping")
	}
}
