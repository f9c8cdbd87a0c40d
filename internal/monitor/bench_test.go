package monitor

import (
	"testing"
	"time"

	"github.com/pharox/pharox-nats/broker"
)

// BenchmarkPairInstruments is what the metrics add to one acquire+release
// pair on the request path: two observations of the request histogram and
// the two callbacks' counters (go test -bench PairInstruments ./internal/monitor).
func BenchmarkPairInstruments(b *testing.B) {
	mon := New()
	in := mon.inst
	for b.Loop() {
		in.Observe(broker.Observation{Operation: "acquire", Took: time.Millisecond, Code: "ok"})
		in.acquires.WithLabelValues("scrapers", OutcomeGranted).Inc()
		in.Observe(broker.Observation{Operation: "release", Took: time.Millisecond, Code: "ok"})
		in.releases.WithLabelValues("scrapers", OutcomeReleased).Inc()
	}
}
