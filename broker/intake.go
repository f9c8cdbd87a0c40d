package broker

import (
	"context"
	"sync"
)

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
}

// job is one request: run serves it in a slot; refuse answers it without
// serving it (why: "stopping" or "full").
type job struct {
	size   int
	run    func()
	refuse func(why string)
}

func newIntake(name string, slots, maxLine, maxBytes int) *intake {
	return &intake{name: name, slots: slots, maxLine: maxLine, maxBytes: maxBytes}
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
		go in.serve(j)
	case (in.maxLine >= 0 && len(in.line) >= in.maxLine) || (in.maxBytes >= 0 && in.lineBytes+j.size > in.maxBytes):
		in.mu.Unlock()
		j.refuse("full")
	default:
		in.line = append(in.line, j)
		in.lineBytes += j.size
		in.mu.Unlock()
	}
}

// serve runs j in the slot it was given, then hands the slot on.
func (in *intake) serve(j job) {
	j.run()
	in.release()
}

// release gives a slot back: to a waiting acquire taking one back first
// (it was admitted before anything in line), else to the next request in
// line.
func (in *intake) release() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.busy--
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
			go in.serve(j)
		default:
			return
		}
	}
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
	in.stopped = true
	line := in.line
	in.line, in.lineBytes = nil, 0
	in.mu.Unlock()
	for _, j := range line {
		j.refuse("stopping")
	}
}
