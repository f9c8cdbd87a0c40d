package health

import "github.com/pharox/pharox-nats/model"

// Decide is the status policy: the status a proxy gets from one probe
// result, given its status now, the consecutive failed checks counted
// including this one, and the pool's failure_threshold.
//
//   - banned is never changed by a check (only an admin bans or unbans);
//   - a successful probe sets the status the probe measured: active, or
//     slow when the answer came later than slow_threshold_ms (pharox's
//     HealthCheckResult, applied as pharox applies it). So an inactive
//     proxy that answers again becomes active (or slow) on its first good
//     check, and a slow one that speeds up becomes active again. Only
//     active proxies are leased, so a slow proxy is not leased;
//   - a failed probe makes the proxy inactive once failures reaches the
//     threshold; before that the proxy keeps its status (one timeout does
//     not take a proxy out of rotation).
func Decide(current, probed model.ProxyStatus, failures, threshold int) model.ProxyStatus {
	if current == model.ProxyBanned {
		return model.ProxyBanned
	}
	switch probed {
	case model.ProxyActive, model.ProxySlow:
		return probed
	}
	if failures >= max(threshold, 1) {
		return model.ProxyInactive
	}
	return current
}
