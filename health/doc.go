// Package health checks proxies the way pharox's HealthChecker does and
// runs the checks from the workers.
//
// # Probes
//
// A Prober makes one GET of options.target_url through a proxy, in the
// proxy's protocol (HTTP forward proxy, CONNECT tunnel for https proxies and
// https targets, SOCKS4/4a, SOCKS5 with username/password), up to
// options.attempts times, each bounded by options.timeout. The result is
// pharox's HealthCheckResult: active when an attempt got one of
// expected_status_codes within slow_threshold_ms, slow when it got one
// later, inactive when every attempt failed (refused, timed out, bad
// credentials, unexpected status). A proxy's password never appears in an
// error_message.
//
// # Recording results
//
// Every result, from a sweep or from pharox.admin.health.check, is recorded
// in two writes:
//
//  1. the proxy's consecutive failed checks, kept in the KV bucket
//     PHAROX_HEALTH under the proxy id, shared by all workers: a failed
//     check increments it, a good one deletes it, both revision-checked
//     (Get + Create/Update/Delete with the revision read, retried on
//     conflict);
//  2. the proxy record, through manager.ApplyHealthDecision: the same
//     revision-checked write as admin.health.apply (it never loses a lease
//     committed meanwhile), with the new status decided by Decide inside
//     that write from the status the write is based on, and checked_at set.
//     The manager fires the health callback, published as
//     pharox.events.health, when the status changed, so each change is
//     published once, by the worker whose write made it.
//
// A worker that dies between the two writes has counted a failure it did
// not apply; the next check applies it (so a threshold may be reached one
// check early, never late).
//
// # Policy (Decide)
//
// banned is never changed by a check. A good probe sets active, or slow
// when it was slower than slow_threshold_ms (pharox applies the status the
// result carries, and only active proxies are leased, so a slow proxy is not
// leased until a check finds it fast again). A failed probe makes the proxy
// inactive once failure_threshold consecutive checks have failed; before
// that the status stays as it is. pharox.admin.health.check uses the pool's
// failure_threshold, or 1 when the pool has no health_check (so the result's
// status is applied as it is, as with admin.health.apply).
//
// # Sweeps
//
// See Sweep: per-proxy interval slots with a phase from the proxy id, one
// claim per (proxy, slot) in the bucket PHAROX_HEALTH_CLAIMS (KV Create with
// a per-key TTL), a small per-worker jitter, and a bound on the probes a
// worker runs at once (WithConcurrency), shared with admin.health.check.
package health
