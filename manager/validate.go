package manager

import (
	"fmt"
	"github.com/google/uuid"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pharox/pharox-nats/model"
)

// acquireParams is an AcquireRequest with its defaults filled in and checked.
type acquireParams struct {
	pool      string
	consumer  string
	duration  time.Duration
	filters   *model.ProxyFilters
	selector  model.Selector
	wait      time.Duration
	requestID string
	exclude   map[string]struct{}
	// begun is the wall-clock start, for the wait deadline: the store's
	// clock may be a test's.
	begun time.Time
}

func (m *Manager) checkAcquire(req model.AcquireRequest) (acquireParams, error) {
	p := acquireParams{pool: req.PoolName, consumer: model.DefaultConsumer, selector: model.SelectorFirstAvailable, filters: req.Filters, begun: time.Now()}
	if err := model.CheckName("pool_name", req.PoolName); err != nil {
		return p, err
	}
	if req.ConsumerName != nil {
		if err := model.CheckName("consumer_name", *req.ConsumerName); err != nil {
			return p, err
		}
		p.consumer = *req.ConsumerName
	}
	d, err := m.checkDuration(req.DurationSeconds)
	if err != nil {
		return p, err
	}
	p.duration = d
	if req.Filters != nil {
		if err := req.Filters.Validate(); err != nil {
			return p, err
		}
	}
	if req.Selector != nil {
		if !req.Selector.Valid() {
			return p, model.Errorf(model.ErrBadRequest, "selector must be first_available, least_used, round_robin, random or lowest_latency, got %q", *req.Selector)
		}
		p.selector = *req.Selector
	}
	if req.WaitSeconds != nil {
		w := *req.WaitSeconds
		if math.IsNaN(w) || w < 0 || w > model.MaxWaitSeconds {
			return p, model.Errorf(model.ErrBadRequest, "wait_seconds must be in 0..%d, got %v", model.MaxWaitSeconds, w)
		}
		p.wait = time.Duration(w * float64(time.Second))
	}
	if req.RequestID != nil {
		// The bound is in characters, as the schema's maxLength counts them.
		if n := utf8.RuneCountInString(*req.RequestID); n == 0 || n > model.MaxRequestIDLen {
			return p, model.Errorf(model.ErrBadRequest, "request_id must be 1..%d characters", model.MaxRequestIDLen)
		}
		p.requestID = *req.RequestID
	}
	exclude, err := checkExclude(req.ExcludeProxyIDs)
	if err != nil {
		return p, err
	}
	p.exclude = exclude
	return p, nil
}

// checkExclude checks exclude_proxy_ids: at most 100 UUID strings (any
// version). An id that names no proxy is fine: it is never chosen anyway.
func checkExclude(ids []string) (map[string]struct{}, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > model.MaxExcludeProxyIDs {
		return nil, model.Errorf(model.ErrBadRequest, "exclude_proxy_ids must hold at most %d ids, got %d", model.MaxExcludeProxyIDs, len(ids))
	}
	set := make(map[string]struct{}, len(ids))
	for i, id := range ids {
		if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
			return nil, model.Errorf(model.ErrBadRequest, "exclude_proxy_ids[%d] must be a UUID, got %q", i, id)
		}
		set[strings.ToLower(id)] = struct{}{}
	}
	return set, nil
}

// checkDuration applies the default and the bounds 1..max-duration.
func (m *Manager) checkDuration(seconds *int) (time.Duration, error) {
	if seconds == nil {
		return time.Duration(min(model.DefaultDurationSeconds, int(m.opts.maxDuration/time.Second))) * time.Second, nil
	}
	maxSec := int(m.opts.maxDuration / time.Second)
	if *seconds < 1 || *seconds > maxSec {
		return 0, model.Errorf(model.ErrBadRequest, "duration_seconds must be in 1..%d, got %d", maxSec, *seconds)
	}
	return time.Duration(*seconds) * time.Second, nil
}

// checkUUID refuses a missing id (400) and answers an id that is not a UUID
// in its canonical lower-case form (model.ValidID) as what it is, the id of
// nothing (404), without asking the store.
func checkUUID(field, v string) error {
	if v == "" {
		return model.Errorf(model.ErrBadRequest, "%s is required", field)
	}
	if model.ValidID(v) {
		return nil
	}
	switch field {
	case "lease_id":
		return model.Errorf(model.ErrLeaseNotFound, "lease %q does not exist", v)
	case "proxy_id":
		return model.Errorf(model.ErrProxyNotFound, "proxy %q does not exist", v)
	}
	return model.Errorf(model.ErrBadRequest, "%s must be a UUID, got %q", field, v)
}

// checkProxyInput validates one proxy of an add request; index names it.
func checkProxyInput(i int, in model.ProxyInput) error {
	at := fmt.Sprintf("proxies[%d]", i)
	if err := model.CheckHost(at+".host", in.Host); err != nil {
		return err
	}
	if in.Port < 1 || in.Port > 65535 {
		return model.Errorf(model.ErrBadRequest, "%s.port must be in 1..65535, got %d", at, in.Port)
	}
	if in.Protocol != nil && !in.Protocol.Valid() {
		return model.Errorf(model.ErrBadRequest, "%s.protocol must be http, https, socks4 or socks5, got %q", at, *in.Protocol)
	}
	if in.Status != nil && !in.Status.Valid() {
		return model.Errorf(model.ErrBadRequest, "%s.status must be active, inactive, slow or banned, got %q", at, *in.Status)
	}
	if err := checkCredentials(at+".credentials", in.Credentials); err != nil {
		return err
	}
	return checkCommon(at, in.Latitude, in.Longitude, in.MaxConcurrency)
}

// checkCredentials refuses blank credentials, as pharox does: a proxy has
// a user and a password, or no credentials at all.
func checkCredentials(field string, c *model.Credentials) error {
	switch {
	case c == nil:
		return nil
	case c.User == "":
		return model.Errorf(model.ErrBadRequest, "%s.user must not be empty (leave credentials out for none)", field)
	case c.Password == "":
		return model.Errorf(model.ErrBadRequest, "%s.password must not be empty (leave credentials out for none)", field)
	}
	return nil
}

func checkCommon(at string, lat, lon *float64, maxConc *int) error {
	if lat != nil && (math.IsNaN(*lat) || *lat < -90 || *lat > 90) {
		return model.Errorf(model.ErrBadRequest, "%s.latitude must be in [-90, 90]", at)
	}
	if lon != nil && (math.IsNaN(*lon) || *lon < -180 || *lon > 180) {
		return model.Errorf(model.ErrBadRequest, "%s.longitude must be in [-180, 180]", at)
	}
	if maxConc != nil && *maxConc < 1 {
		return model.Errorf(model.ErrBadRequest, "%s.max_concurrency must be a positive integer or null, got %d", at, *maxConc)
	}
	return nil
}

// checkProxyUpdate validates a partial update before any write.
func checkProxyUpdate(u model.ProxyUpdateRequest) error {
	if err := checkUUID("proxy_id", u.ProxyID); err != nil {
		return err
	}
	notNull := map[string]bool{"host": u.Host.Set && u.Host.Value == nil, "port": u.Port.Set && u.Port.Value == nil,
		"protocol": u.Protocol.Set && u.Protocol.Value == nil, "status": u.Status.Set && u.Status.Value == nil}
	for field, isNull := range notNull {
		if isNull {
			return model.Errorf(model.ErrBadRequest, "%s cannot be null", field)
		}
	}
	if u.Host.Value != nil {
		if err := model.CheckHost("host", *u.Host.Value); err != nil {
			return err
		}
	}
	if u.Port.Value != nil && (*u.Port.Value < 1 || *u.Port.Value > 65535) {
		return model.Errorf(model.ErrBadRequest, "port must be in 1..65535, got %d", *u.Port.Value)
	}
	if u.Protocol.Value != nil && !u.Protocol.Value.Valid() {
		return model.Errorf(model.ErrBadRequest, "protocol must be http, https, socks4 or socks5, got %q", *u.Protocol.Value)
	}
	if u.Status.Value != nil && !u.Status.Value.Valid() {
		return model.Errorf(model.ErrBadRequest, "status must be active, inactive, slow or banned, got %q", *u.Status.Value)
	}
	if err := checkCredentials("credentials", u.Credentials.Value); err != nil {
		return err
	}
	if u.ConsecutiveFailures.Set && (u.ConsecutiveFailures.Value == nil || *u.ConsecutiveFailures.Value < 0) {
		return model.Errorf(model.ErrBadRequest, "consecutive_failures must be an integer >= 0")
	}
	if _, err := cooldownUntil(u.CooldownUntil); err != nil {
		return err
	}
	return checkCommon("proxy", u.Latitude.Value, u.Longitude.Value, u.MaxConcurrency.Value)
}

// cooldownUntil reads an update's cooldown_until: an RFC 3339 time, or null.
func cooldownUntil(o model.Optional[string]) (*time.Time, error) {
	if o.Value == nil {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *o.Value)
	if err != nil {
		return nil, model.Errorf(model.ErrBadRequest, "cooldown_until must be an RFC 3339 time or null, got %q", *o.Value)
	}
	t = t.UTC()
	return &t, nil
}

// checkHealthCheck validates a pool's health-check settings.
func checkHealthCheck(hc *model.HealthCheck) error {
	if hc == nil {
		return nil
	}
	if !(hc.IntervalSeconds > 0) {
		return model.Errorf(model.ErrBadRequest, "health_check.interval_seconds must be > 0")
	}
	if hc.FailureThreshold < 1 {
		return model.Errorf(model.ErrBadRequest, "health_check.failure_threshold must be >= 1")
	}
	if o := hc.Options; o != nil {
		if o.TargetURL == "" {
			return model.Errorf(model.ErrBadRequest, "health_check.options.target_url is required")
		}
		if !(o.Timeout > 0) {
			return model.Errorf(model.ErrBadRequest, "health_check.options.timeout must be > 0")
		}
		if o.Attempts < 1 || o.Attempts > 5 {
			return model.Errorf(model.ErrBadRequest, "health_check.options.attempts must be in 1..5")
		}
		for _, c := range o.ExpectedStatusCodes {
			if c < 100 || c > 599 {
				return model.Errorf(model.ErrBadRequest, "health_check.options.expected_status_codes has %d, not an HTTP status", c)
			}
		}
		if o.SlowThresholdMs < 0 {
			return model.Errorf(model.ErrBadRequest, "health_check.options.slow_threshold_ms must be >= 0")
		}
	}
	return nil
}

// checkRelease checks a release's outcome and reason (v1.1): a known
// outcome, a reason of at most 1024 code points, and no reason without an
// outcome.
func checkRelease(req model.ReleaseRequest) error {
	if req.Outcome != nil && !req.Outcome.Valid() {
		return model.Errorf(model.ErrBadRequest, "outcome must be success or failure, got %q", *req.Outcome)
	}
	if req.Reason != nil {
		if req.Outcome == nil {
			return model.Errorf(model.ErrBadRequest, "reason needs an outcome")
		}
		if n := utf8.RuneCountInString(*req.Reason); n > model.MaxReasonLen {
			return model.Errorf(model.ErrBadRequest, "reason must be at most %d characters, got %d", model.MaxReasonLen, n)
		}
	}
	return nil
}
