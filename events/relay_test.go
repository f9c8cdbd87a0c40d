package events

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pharox/pharox-nats/kvstore"
)

// After a leader election of the outbox bucket every worker's heartbeats
// resume, one after the other: a worker whose next beat is stored a moment
// after the others' is not dead, and the relay must not publish what it
// owes. A worker that stays silent while the others beat is.
func TestRelayWaitsOutAnElection(t *testing.T) {
	const period, deadAfter = 100 * time.Millisecond, 600 * time.Millisecond
	p := &Publisher{worker: "a", opts: options{beat: period, deadAfter: deadAfter}}
	r := newRelay(p)
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	heartbeat := func(worker string, at time.Duration) {
		data, _ := json.Marshal(beat{Watermarks: map[string]uint64{proxiesStream: 1}})
		r.key(kvstore.Entry{Key: worker, Value: data, Created: t0.Add(at)})
	}
	// b owes a write it has not published (yet).
	r.owed(proxiesStream, 7, kvstore.Owed{Worker: "b", Entry: "{}", At: time.Now()})

	for at := time.Duration(0); at <= time.Second; at += period {
		heartbeat("a", at)
		heartbeat("b", at)
	}
	if o := r.orphans(); len(o) != 0 {
		t.Fatalf("both beating: orphans %v", o)
	}

	// The bucket is leaderless for 5 s: nobody's beat is stored. Then a's
	// beats resume first, b's 400 ms later, within deadAfter of each other
	// but more than deadAfter after b's last one.
	resume := time.Second + 5*time.Second
	heartbeat("a", resume)
	heartbeat("a", resume+period)
	heartbeat("a", resume+2*period)
	heartbeat("a", resume+3*period)
	if o := r.orphans(); len(o) != 0 {
		t.Fatalf("b not beating yet, right after an election: treated as dead, orphans %v", o)
	}
	heartbeat("b", resume+4*period)
	if o := r.orphans(); len(o) != 0 {
		t.Fatalf("b beating again: orphans %v", o)
	}

	// b stops for good while a goes on: b is dead after deadAfter of a's
	// beats, and a (the live worker with the smallest id) relays its write.
	last := resume + 4*period
	for at := last + period; at <= last+deadAfter; at += period {
		heartbeat("a", at)
		if o := r.orphans(); len(o) != 0 {
			t.Fatalf("b silent for only %v: orphans %v", at-last, o)
		}
	}
	heartbeat("a", last+deadAfter+period)
	o := r.orphans()
	if len(o["b"]) != 1 || o["b"][0].rev != 7 {
		t.Fatalf("b silent for %v while a beats: orphans %v, want b's write at 7", deadAfter+period, o)
	}
}
