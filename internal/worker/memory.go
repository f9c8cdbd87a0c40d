package worker

import (
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// returnLoadGarbage hands back to the OS the memory that the replica's
// initial load left as garbage. Loading a pool allocates about as much
// transient memory (messages, decoding) as the replica keeps, so with the
// runtime's default GOGC the heap reached about twice the replica by the
// end of the load, and those pages stayed resident for minutes (the
// background scavenger returns them slowly): 1,076 MB of RSS for a
// 1,000,000-proxy pool whose replica is about 550 MB. One forced collection
// here (about 0.5 s at a million proxies, a few ms for a small pool) makes
// the worker start serving at about its live size. It does not lower the
// steady state: as requests make garbage, the heap grows back towards the
// runtime's goal (GOGC, twice the live heap by default) before each
// collection; set GOGC (or GOMEMLIMIT) to trade that headroom for GC CPU.
func returnLoadGarbage(log *zap.Logger) {
	start := time.Now()
	debug.FreeOSMemory()
	log.Debug("returned the initial load's garbage to the OS", zap.Duration("took", time.Since(start)))
}
