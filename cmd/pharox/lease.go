package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

// acquireFlags are the flags of acquire and run that build an AcquireRequest.
type acquireFlags struct {
	pool, consumer             string
	duration                   int
	country, source, city, isp string
	asn                        int64
	near                       string
	radius                     float64
	selector                   string
	wait                       float64
	requestID                  string
	protocols                  []string
	exclude                    []string
	fs                         *pflag.FlagSet
}

func (f *acquireFlags) register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVarP(&f.pool, "pool", "p", "", "pool to lease from (required)")
	fs.StringVarP(&f.consumer, "consumer", "c", "", `who holds the lease (default "default")`)
	fs.IntVarP(&f.duration, "duration", "d", model.DefaultDurationSeconds, "lease length in seconds")
	fs.StringVar(&f.country, "country", "", "only proxies of this country")
	fs.StringVar(&f.source, "source", "", "only proxies of this source")
	fs.StringVar(&f.city, "city", "", "only proxies of this city")
	fs.StringVar(&f.isp, "isp", "", "only proxies of this ISP")
	fs.Int64Var(&f.asn, "asn", 0, "only proxies of this ASN")
	fs.StringVar(&f.near, "near", "", "LAT,LON: only proxies at these coordinates, or within --radius km of them")
	fs.Float64Var(&f.radius, "radius", 0, "with --near: distance in km")
	fs.StringVar(&f.selector, "selector", "", "first_available (default), least_used, round_robin, random or lowest_latency")
	fs.StringSliceVar(&f.protocols, "protocol", nil, "only proxies speaking one of these protocols (http,https,socks4,socks5)")
	fs.StringArrayVar(&f.exclude, "exclude", nil, "never this proxy id (repeat the flag for more, at most 100)")
	fs.Float64Var(&f.wait, "wait", 0, "if none is free, wait up to this many seconds (0..60) for one")
	fs.StringVar(&f.requestID, "request-id", "", "idempotency key: a retry with the same key and consumer gets the same lease")
}

// request builds the AcquireRequest; only flags given are sent.
func (f *acquireFlags) request() (model.AcquireRequest, error) {
	if f.pool == "" {
		return model.AcquireRequest{}, usageErrorf("--pool is required")
	}
	req := model.AcquireRequest{PoolName: f.pool}
	if f.consumer != "" {
		req.ConsumerName = &f.consumer
	}
	setIfGiven(f.fs, "duration", &req.DurationSeconds, &f.duration)
	var filt model.ProxyFilters
	any := false
	str := func(name string, v string, dst **string) {
		if f.fs.Changed(name) {
			*dst = &v
			any = true
		}
	}
	str("country", f.country, &filt.Country)
	str("source", f.source, &filt.Source)
	str("city", f.city, &filt.City)
	str("isp", f.isp, &filt.ISP)
	if f.fs.Changed("asn") {
		filt.ASN = &f.asn
		any = true
	}
	if f.near != "" {
		lat, lon, err := parseLatLon(f.near)
		if err != nil {
			return req, usageErrorf("--near: %v", err)
		}
		filt.Latitude, filt.Longitude = &lat, &lon
		any = true
	}
	if len(f.protocols) > 0 {
		for _, p := range f.protocols {
			proto := model.Protocol(strings.ToLower(strings.TrimSpace(p)))
			if !proto.Valid() {
				return req, usageErrorf("--protocol must be http, https, socks4 or socks5, got %q", p)
			}
			filt.Protocol = append(filt.Protocol, proto)
		}
		any = true
	}
	if f.fs.Changed("radius") {
		if f.near == "" {
			return req, usageErrorf("--radius needs --near LAT,LON")
		}
		if !(f.radius > 0) {
			return req, usageErrorf("--radius must be > 0 km, got %v", f.radius)
		}
		filt.RadiusKm = &f.radius
	}
	if any {
		req.Filters = &filt
	}
	if f.selector != "" {
		s := model.Selector(f.selector)
		if !s.Valid() {
			return req, usageErrorf("--selector must be first_available, least_used, round_robin, random or lowest_latency, got %q", f.selector)
		}
		req.Selector = &s
	}
	if f.fs.Changed("wait") {
		if f.wait < 0 || f.wait > model.MaxWaitSeconds {
			return req, usageErrorf("--wait must be 0..%d seconds, got %v", model.MaxWaitSeconds, f.wait)
		}
		req.WaitSeconds = &f.wait
	}
	if f.requestID != "" {
		req.RequestID = &f.requestID
	}
	if len(f.exclude) > model.MaxExcludeProxyIDs {
		return req, usageErrorf("--exclude: at most %d proxy ids, got %d", model.MaxExcludeProxyIDs, len(f.exclude))
	}
	req.ExcludeProxyIDs = f.exclude
	return req, nil
}

func parseLatLon(s string) (float64, float64, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return 0, 0, fmt.Errorf("want LAT,LON, got %q", s)
	}
	lat, err1 := strconv.ParseFloat(strings.TrimSpace(parts[0]), 64)
	lon, err2 := strconv.ParseFloat(strings.TrimSpace(parts[1]), 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("want LAT,LON as numbers, got %q", s)
	}
	if lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return 0, 0, fmt.Errorf("latitude must be in [-90, 90] and longitude in [-180, 180], got %q", s)
	}
	return lat, lon, nil
}

func noProxyError(pool string) error {
	return fmt.Errorf("%w in pool %q", model.ErrNoProxyAvailable, pool)
}

func (a *app) acquireCmd() *cobra.Command {
	var f acquireFlags
	var env bool
	cmd := &cobra.Command{
		Use:   "acquire --pool POOL [filters]",
		Short: "Lease a proxy and print the lease and the proxy URL",
		Long: `Lease a proxy from a pool and print the lease and the proxy URL. Release it
with "pharox release LEASE_ID" (or let it expire). Exits 3 when no eligible
proxy is free.

With --env it prints shell assignments instead, for
  eval "$(pharox acquire --pool scrapers --env)"
which sets PHAROX_LEASE_ID, PHAROX_PROXY_ID and PHAROX_PROXY_URL.`,
		Example: `  pharox acquire --pool scrapers --consumer crawler-1 --duration 60 --country AR
  pharox acquire --pool scrapers --near -34.6,-58.4 --radius 50 --selector least_used --wait 10`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := f.request()
			if err != nil {
				return err
			}
			return send(a, cmd, func(c *client.Client, ctx context.Context) (model.AcquireReply, error) {
				lease, proxy, err := c.Acquire(ctx, req)
				return model.AcquireReply{Lease: lease, Proxy: proxy}, err
			}, func(reply model.AcquireReply) error {
				lease, proxy := reply.Lease, reply.Proxy
				switch {
				case a.jsonOut:
					if err := a.printJSON(reply); err != nil {
						return err
					}
				case lease == nil:
				case env:
					fmt.Fprintf(a.stdout, "PHAROX_LEASE_ID=%s\nPHAROX_PROXY_ID=%s\nPHAROX_PROXY_URL=%s\n",
						shellQuote(lease.ID), shellQuote(proxy.ID), shellQuote(proxy.URL))
				default:
					if err := a.kv(
						[2]string{"lease", lease.ID},
						[2]string{"proxy", proxy.URL},
						[2]string{"proxy_id", proxy.ID},
						[2]string{"pool", lease.PoolName},
						[2]string{"consumer", lease.ConsumerName},
						[2]string{"expires", fmt.Sprintf("%s (in %s)", fmtTime(lease.ExpiresAt), lease.ExpiresAt.Sub(lease.AcquiredAt).Round(time.Second))},
						[2]string{"fencing_token", strconv.FormatUint(lease.FencingToken, 10)},
					); err != nil {
						return err
					}
				}
				if lease == nil {
					return noProxyError(req.PoolName)
				}
				return nil
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&env, "env", false, "print PHAROX_LEASE_ID=... PHAROX_PROXY_ID=... PHAROX_PROXY_URL=... for eval")
	return cmd
}

// shellQuote single-quotes s for POSIX shells.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) printLease(l model.Lease) error {
	if a.jsonOut {
		return a.printJSON(model.LeaseReply{Lease: &l})
	}
	return a.kv(
		[2]string{"lease", l.ID},
		[2]string{"status", string(l.Status)},
		[2]string{"pool", l.PoolName},
		[2]string{"consumer", l.ConsumerName},
		[2]string{"proxy_id", l.ProxyID},
		[2]string{"acquired", fmtTime(l.AcquiredAt)},
		[2]string{"expires", fmtTime(l.ExpiresAt)},
		[2]string{"released", fmtTimePtr(l.ReleasedAt)},
		[2]string{"fencing_token", strconv.FormatUint(l.FencingToken, 10)},
	)
}

func (a *app) releaseCmd() *cobra.Command {
	var consumer, outcome, reason string
	cmd := &cobra.Command{
		Use:   "release LEASE_ID",
		Short: "End a lease (releasing an ended lease changes nothing)",
		Long: `End a lease. Releasing an ended lease changes nothing.

--outcome tells the pool how the proxy did: success resets its consecutive
failures, failure adds one (and, with the pool's cooldown, may take the proxy
out of rotation for a while). --reason says why, for the events.`,
		Example: `  pharox release "$PHAROX_LEASE_ID"
  pharox release "$PHAROX_LEASE_ID" --outcome failure --reason "HTTP 403 from target"`,
		Args: exactArgs(1, "one LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := model.ReleaseRequest{LeaseID: args[0]}
			if consumer != "" {
				req.ConsumerName = &consumer
			}
			if err := releaseOutcome(&req, cmd.Flags().Changed("outcome"), outcome, cmd.Flags().Changed("reason"), reason); err != nil {
				return err
			}
			return send(a, cmd, bind((*client.Client).Release, req), a.printLease)
		},
	}
	cmd.Flags().StringVarP(&consumer, "consumer", "c", "", "refuse unless the lease is this consumer's")
	cmd.Flags().StringVar(&outcome, "outcome", "", "how the proxy did: success or failure")
	cmd.Flags().StringVar(&reason, "reason", "", "why (with --outcome; at most 1024 characters)")
	return cmd
}

// releaseOutcome sets a release's outcome and reason from the flags.
func releaseOutcome(req *model.ReleaseRequest, hasOutcome bool, outcome string, hasReason bool, reason string) error {
	if hasOutcome {
		o := model.Outcome(outcome)
		if !o.Valid() {
			return usageErrorf("--outcome must be success or failure, got %q", outcome)
		}
		req.Outcome = &o
	}
	if hasReason {
		if !hasOutcome {
			return usageErrorf("--reason needs --outcome")
		}
		if n := utf8.RuneCountInString(reason); n > model.MaxReasonLen {
			return usageErrorf("--reason must be at most %d characters, got %d", model.MaxReasonLen, n)
		}
		req.Reason = &reason
	}
	return nil
}

func (a *app) renewCmd() *cobra.Command {
	var consumer string
	var duration int
	cmd := &cobra.Command{
		Use:   "renew LEASE_ID",
		Short: "Extend an active lease to now + --duration seconds",
		Args:  exactArgs(1, "one LEASE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := model.RenewRequest{LeaseID: args[0], DurationSeconds: &duration}
			if consumer != "" {
				req.ConsumerName = &consumer
			}
			return send(a, cmd, bind((*client.Client).Renew, req), a.printLease)
		},
	}
	cmd.Flags().StringVarP(&consumer, "consumer", "c", "", "refuse unless the lease is this consumer's")
	cmd.Flags().IntVarP(&duration, "duration", "d", model.DefaultDurationSeconds, "new lease length in seconds, from now")
	return cmd
}

func (a *app) leaseCmd() *cobra.Command {
	return showCmd(a, "lease LEASE_ID", "Show a lease", "one LEASE_ID", (*client.Client).Lease, a.printLease)
}

func (a *app) statsCmd() *cobra.Command {
	var pool string
	cmd := &cobra.Command{
		Use:   "stats --pool POOL",
		Short: "Show a pool's statistics",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pool == "" {
				return usageErrorf("--pool is required")
			}
			return send(a, cmd, bind((*client.Client).Stats, pool), a.printStats)
		},
	}
	cmd.Flags().StringVarP(&pool, "pool", "p", "", "pool name (required)")
	return cmd
}

func (a *app) printStats(s model.PoolStatsSnapshot) error {
	if a.jsonOut {
		return a.printJSON(s)
	}
	return a.kv(
		[2]string{"pool", s.PoolName},
		[2]string{"total_proxies", strconv.Itoa(s.TotalProxies)},
		[2]string{"active_proxies", strconv.Itoa(s.ActiveProxies)},
		[2]string{"available_proxies", strconv.Itoa(s.AvailableProxies)},
		[2]string{"leased_proxies", strconv.Itoa(s.LeasedProxies)},
		[2]string{"total_leases", strconv.Itoa(s.TotalLeases)},
		[2]string{"cooling_proxies", strconv.Itoa(s.CoolingProxies)},
		[2]string{"collected_at", fmtTime(s.CollectedAt)},
	)
}

func (a *app) cleanupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Mark every lease past its expiry as expired and free its slot",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return send(a, cmd, (*client.Client).Cleanup, func(n int) error {
				if a.jsonOut {
					return a.printJSON(model.CleanupReply{Released: n})
				}
				fmt.Fprintf(a.stdout, "expired %d lease(s)\n", n)
				return nil
			})
		},
	}
}
