package health

import (
	"net/url"
	"time"

	"github.com/pharox/pharox-nats/model"
)

// Bounds of admin.health.check and of the options, as the contract and
// pharox's HealthCheckOptions give them.
const (
	// DefaultCheckLimit is how many proxies a pool may have for one
	// admin.health.check when the request gives no limit.
	DefaultCheckLimit = 100
	// MaxCheckLimit is the largest limit a request may give.
	MaxCheckLimit = 1000
	// MaxTimeout bounds options.timeout: a probe waits at most this long
	// for one attempt.
	MaxTimeout = 60 * time.Second
)

// DefaultOptions returns pharox's HealthCheckOptions defaults: timeout 5 s,
// 1 attempt, expected status codes [200], slow threshold 2000 ms, redirects
// followed, no headers. pharox has no target every deployment can reach, so
// TargetURL is empty: a pool's options or the request must name one.
func DefaultOptions() model.HealthCheckOptions {
	return model.HealthCheckOptions{
		Timeout:             5,
		Attempts:            1,
		ExpectedStatusCodes: []int{200},
		SlowThresholdMs:     2000,
		AllowRedirects:      true,
		Headers:             map[string]string{},
	}
}

// Resolve picks the options a check runs with: the request's when given
// (an empty target_url there takes the pool's), else the pool's, else the
// defaults. It validates the outcome; a problem is model.ErrBadRequest.
func Resolve(pool *model.HealthCheck, override *model.HealthCheckOptions) (model.HealthCheckOptions, error) {
	var poolOpts *model.HealthCheckOptions
	if pool != nil {
		poolOpts = pool.Options
	}
	var o model.HealthCheckOptions
	switch {
	case override != nil:
		o = clone(*override)
		if o.TargetURL == "" && poolOpts != nil {
			o.TargetURL = poolOpts.TargetURL
		}
	case poolOpts != nil:
		o = clone(*poolOpts)
	default:
		o = DefaultOptions()
	}
	if len(o.ExpectedStatusCodes) == 0 {
		// An empty list would make every answer a failure; read it as
		// pharox's default.
		o.ExpectedStatusCodes = []int{200}
	}
	if o.Headers == nil {
		o.Headers = map[string]string{}
	}
	return o, Validate(o)
}

// Validate checks options against the contract's bounds.
func Validate(o model.HealthCheckOptions) error {
	if o.TargetURL == "" {
		return model.Errorf(model.ErrBadRequest, "options.target_url is required (in the request or in the pool's health_check.options)")
	}
	u, err := url.Parse(o.TargetURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return model.Errorf(model.ErrBadRequest, "options.target_url must be an absolute http or https URL, got %q", o.TargetURL)
	}
	if !(o.Timeout > 0) || o.Timeout > MaxTimeout.Seconds() {
		return model.Errorf(model.ErrBadRequest, "options.timeout must be in (0, %g] seconds, got %g", MaxTimeout.Seconds(), o.Timeout)
	}
	if o.Attempts < 1 || o.Attempts > 5 {
		return model.Errorf(model.ErrBadRequest, "options.attempts must be in 1..5, got %d", o.Attempts)
	}
	for _, c := range o.ExpectedStatusCodes {
		if c < 100 || c > 599 {
			return model.Errorf(model.ErrBadRequest, "options.expected_status_codes has %d, not an HTTP status", c)
		}
	}
	if o.SlowThresholdMs < 0 {
		return model.Errorf(model.ErrBadRequest, "options.slow_threshold_ms must be >= 0, got %g", o.SlowThresholdMs)
	}
	return nil
}

func clone(o model.HealthCheckOptions) model.HealthCheckOptions {
	c := o
	c.ExpectedStatusCodes = append([]int(nil), o.ExpectedStatusCodes...)
	c.Headers = make(map[string]string, len(o.Headers))
	for k, v := range o.Headers {
		c.Headers[k] = v
	}
	return c
}

// attemptTimeout is options.timeout as a duration.
func attemptTimeout(o model.HealthCheckOptions) time.Duration {
	return time.Duration(o.Timeout * float64(time.Second))
}
