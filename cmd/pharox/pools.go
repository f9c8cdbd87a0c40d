package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// cooldownFlags are the flags of a pool's cooldown setting.
type cooldownFlags struct {
	fs                         *pflag.FlagSet
	failures, seconds, maxSecs int
}

func (c *cooldownFlags) register(fs *pflag.FlagSet) {
	c.fs = fs
	fs.IntVar(&c.failures, "cooldown-failures", 0, "cooldown: consecutive failures reported on release that take a proxy out of rotation")
	fs.IntVar(&c.seconds, "cooldown-seconds", 0, "cooldown: seconds out for the first of them, doubling with each further failure")
	fs.IntVar(&c.maxSecs, "cooldown-max", 0, "cooldown: the most seconds a proxy is out (default: --cooldown-seconds)")
}

func (c *cooldownFlags) given() bool {
	return c.fs.Changed("cooldown-failures") || c.fs.Changed("cooldown-seconds") || c.fs.Changed("cooldown-max")
}

// build merges the flags given into current (nil: none yet) and returns the
// setting to send, nil when no flag was given.
func (c *cooldownFlags) build(current *model.Cooldown) (*model.Cooldown, error) {
	if !c.given() {
		return nil, nil
	}
	cd := model.Cooldown{}
	if current != nil {
		cd = *current
	}
	setIfGiven(c.fs, "cooldown-failures", &cd.Failures, c.failures)
	if c.fs.Changed("cooldown-seconds") {
		cd.Seconds = c.seconds
		if current == nil && !c.fs.Changed("cooldown-max") {
			cd.MaxSeconds = c.seconds
		}
	}
	setIfGiven(c.fs, "cooldown-max", &cd.MaxSeconds, c.maxSecs)
	if current == nil && (cd.Failures == 0 || cd.Seconds == 0) {
		return nil, usageErrorf("a new cooldown needs --cooldown-failures and --cooldown-seconds")
	}
	if err := cd.Validate("cooldown"); err != nil {
		return nil, usageError{err}
	}
	return &cd, nil
}

// fmtCooldown is the table's view of a cooldown setting.
func fmtCooldown(c *model.Cooldown) string {
	if c == nil {
		return "-"
	}
	if c.Seconds == c.MaxSeconds {
		return fmt.Sprintf("%d failures: %s", c.Failures, time.Duration(c.Seconds)*time.Second)
	}
	return fmt.Sprintf("%d failures: %s..%s", c.Failures, time.Duration(c.Seconds)*time.Second, time.Duration(c.MaxSeconds)*time.Second)
}

// healthFlags are the flags of a pool's health_check setting.
type healthFlags struct {
	fs                  *pflag.FlagSet
	interval, timeout   float64
	threshold, attempts int
	url                 string
	expect              []int
	slowMs              float64
	enabled             bool
}

func (h *healthFlags) register(fs *pflag.FlagSet) {
	h.fs = fs
	fs.Float64Var(&h.interval, "health-interval", 0, "health check: seconds between sweeps of each proxy")
	fs.IntVar(&h.threshold, "health-threshold", 1, "health check: failed checks in a row that make a proxy inactive")
	fs.BoolVar(&h.enabled, "health-enabled", true, "health check: sweep the pool (false keeps the settings for admin checks only)")
	fs.StringVar(&h.url, "health-url", "", "health check: the URL fetched through each proxy")
	fs.Float64Var(&h.timeout, "health-timeout", 5, "health check: seconds per attempt")
	fs.IntVar(&h.attempts, "health-attempts", 1, "health check: attempts, 1..5")
	fs.IntSliceVar(&h.expect, "health-expect", []int{200}, "health check: status codes that count as good")
	fs.Float64Var(&h.slowMs, "health-slow-ms", 2000, "health check: a good answer slower than this marks the proxy slow")
}

func (h *healthFlags) changed(names ...string) bool {
	for _, n := range names {
		if h.fs.Changed("health-" + n) {
			return true
		}
	}
	return false
}

// build merges the flags given into current and returns the health check to
// send, nil when no flag was given.
func (h *healthFlags) build(current *model.HealthCheck) (*model.HealthCheck, error) {
	opts := h.changed("url", "timeout", "attempts", "expect", "slow-ms")
	if !opts && !h.changed("interval", "threshold", "enabled") {
		return nil, nil
	}
	hc := model.HealthCheck{Enabled: true, FailureThreshold: 1}
	if current != nil {
		hc = *current
	}
	setIfGiven(h.fs, "health-interval", &hc.IntervalSeconds, h.interval)
	setIfGiven(h.fs, "health-threshold", &hc.FailureThreshold, h.threshold)
	setIfGiven(h.fs, "health-enabled", &hc.Enabled, h.enabled)
	if hc.IntervalSeconds <= 0 {
		return nil, usageErrorf("a new health check needs --health-interval SECONDS")
	}
	if opts {
		o := model.HealthCheckOptions{Timeout: 5, Attempts: 1, ExpectedStatusCodes: []int{200}, SlowThresholdMs: 2000,
			AllowRedirects: true, Headers: map[string]string{}}
		if hc.Options != nil {
			o = *hc.Options
		}
		setIfGiven(h.fs, "health-url", &o.TargetURL, h.url)
		setIfGiven(h.fs, "health-timeout", &o.Timeout, h.timeout)
		setIfGiven(h.fs, "health-attempts", &o.Attempts, h.attempts)
		setIfGiven(h.fs, "health-expect", &o.ExpectedStatusCodes, h.expect)
		setIfGiven(h.fs, "health-slow-ms", &o.SlowThresholdMs, h.slowMs)
		if o.TargetURL == "" {
			return nil, usageErrorf("health check options need --health-url")
		}
		hc.Options = &o
	}
	return &hc, nil
}

func (a *app) poolsUpdateCmd() *cobra.Command {
	var description string
	var clear []string
	var cd cooldownFlags
	var hf healthFlags
	cmd := &cobra.Command{
		Use:   "update NAME [flags]",
		Short: "Change a pool's description, health check or cooldown",
		Long: `Change a pool's description, health check or cooldown; what no flag names is
kept, and a setting partly given is merged into the pool's current one.
--clear sets description, health_check or cooldown to null (a cooldown of
null is off).

Cooldown: once a proxy's consecutive failures (reported on release) reach
--cooldown-failures, each failure takes it out of rotation for
--cooldown-seconds, doubled for every failure past the threshold, at most
--cooldown-max seconds. A success resets the count.`,
		Example: `  pharox pools update scrapers --cooldown-failures 3 --cooldown-seconds 30 --cooldown-max 600
  pharox pools update scrapers --health-interval 60 --health-url https://example.com/ --health-threshold 2
  pharox pools update scrapers --clear cooldown`,
		Args: exactArgs(1, "one pool NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := model.PoolUpdateRequest{Name: args[0]}
			setIfGiven(cmd.Flags(), "description", &req.Description, model.Some(description))
			cleared := map[string]bool{}
			for _, field := range clear {
				f := strings.ReplaceAll(strings.TrimSpace(field), "-", "_")
				switch f {
				case "description":
					req.Description = model.Null[string]()
				case "health_check":
					req.HealthCheck = model.Null[model.HealthCheck]()
				case "cooldown":
					req.Cooldown = model.Null[model.Cooldown]()
				default:
					return usageErrorf("--clear %q: only description, health_check and cooldown can be cleared", field)
				}
				cleared[f] = true
			}
			if (cleared["cooldown"] && cd.given()) || (cleared["description"] && cmd.Flags().Changed("description")) {
				return usageErrorf("a field cannot be both set and cleared")
			}
			if cd.given() || hf.changed("interval", "threshold", "enabled", "url", "timeout", "attempts", "expect", "slow-ms") {
				// Partial settings merge into the pool's current ones.
				cur, err := a.findPool(cmd, args[0])
				if err != nil {
					return err
				}
				if v, err := cd.build(cur.Cooldown); err != nil {
					return err
				} else if v != nil {
					req.Cooldown = model.Some(*v)
				}
				if cleared["health_check"] {
					return usageErrorf("a field cannot be both set and cleared")
				}
				if v, err := hf.build(cur.HealthCheck); err != nil {
					return err
				} else if v != nil {
					req.HealthCheck = model.Some(*v)
				}
			}
			return send(a, cmd, bind((*client.Client).UpdatePool, req), single(a, a.printPools))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&description, "description", "", "what the pool is for")
	fs.StringSliceVar(&clear, "clear", nil, "comma-separated settings to set to null: description, health_check, cooldown")
	cd.register(fs)
	hf.register(fs)
	return cmd
}

// findPool reads a pool by name.
func (a *app) findPool(cmd *cobra.Command, name string) (model.ProxyPool, error) {
	c, err := a.client()
	if err != nil {
		return model.ProxyPool{}, err
	}
	pools, err := c.ListPools(cmd.Context())
	if err != nil {
		return model.ProxyPool{}, err
	}
	for _, p := range pools {
		if p.Name == name {
			return p, nil
		}
	}
	return model.ProxyPool{}, model.Errorf(model.ErrPoolNotFound, "pool %q does not exist", name)
}

// parseWhen reads a moment: an RFC 3339 time, or a duration from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time or a duration such as 10m, got %q", s)
	}
	return t, nil
}
