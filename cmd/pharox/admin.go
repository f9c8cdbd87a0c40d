package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

func (a *app) poolsCmd() *cobra.Command {
	var description string
	var createCooldown cooldownFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a pool",
		Args:  exactArgs(1, "one pool NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return send(a, cmd, func(c *client.Client, ctx context.Context) (model.ProxyPool, error) {
				req := model.PoolCreateRequest{Name: args[0]}
				setIfGiven(cmd.Flags(), "description", &req.Description, &description)
				cd, err := createCooldown.build(nil)
				if err != nil {
					return model.ProxyPool{}, err
				}
				req.Cooldown = cd
				return c.CreatePool(ctx, req)
			}, single(a, a.printPools))
		},
	}
	create.Flags().StringVar(&description, "description", "", "what the pool is for")
	createCooldown.register(create.Flags())

	list := listCmd(a, "List pools", (*client.Client).ListPools,
		func(pools []model.ProxyPool) any { return model.PoolsReply{Pools: pools} }, a.printPools)

	del := a.deleteCmd("pool", "delete NAME", "Delete a pool and its proxies (--force releases active leases first)", "one pool NAME",
		"release the pool's active leases and delete anyway",
		func(c *client.Client, ctx context.Context, name string, force bool) error {
			return c.DeletePool(ctx, model.PoolDeleteRequest{Name: name, Force: force})
		})

	return group("pools", "Create, list, update and delete pools", create, list, a.poolsUpdateCmd(), del)
}

// deleteCmd is the delete command of pools and proxies: one NAME or ID, and
// --force to release its active leases first.
func (a *app) deleteCmd(kind, use, short, what, forceUsage string, del func(c *client.Client, ctx context.Context, name string, force bool) error) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, what),
		RunE: func(cmd *cobra.Command, args []string) error {
			return send(a, cmd, func(c *client.Client, ctx context.Context) (struct{}, error) {
				return struct{}{}, del(c, ctx, args[0], force)
			}, func(struct{}) error { return a.deleted(kind, args[0]) })
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	return cmd
}

func (a *app) deleted(kind, name string) error {
	if a.jsonOut {
		return a.printJSON(model.DeletedReply{Deleted: true})
	}
	fmt.Fprintf(a.stdout, "deleted %s %s\n", kind, name)
	return nil
}

func (a *app) printPools(pools ...model.ProxyPool) error {
	w := a.table()
	fmt.Fprintln(w, "NAME\tID\tHEALTH CHECK\tCOOLDOWN\tDESCRIPTION")
	for _, p := range pools {
		hc := "-"
		if p.HealthCheck != nil {
			hc = "disabled"
			if p.HealthCheck.Enabled {
				hc = fmt.Sprintf("every %gs", p.HealthCheck.IntervalSeconds)
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.ID, hc, fmtCooldown(p.Cooldown), orDash(p.Description))
	}
	return w.Flush()
}

// proxyAttrs are the attribute flags of proxies add and update.
type proxyAttrs struct {
	fs                                 *pflag.FlagSet
	status, source, country, city, isp string
	asn                                int64
	lat, lon                           float64
	maxConcurrency                     int
}

func (p *proxyAttrs) register(fs *pflag.FlagSet) {
	p.fs = fs
	fs.StringVar(&p.status, "status", "", "active, inactive, slow or banned")
	fs.StringVar(&p.source, "source", "", "where the proxy comes from")
	fs.StringVar(&p.country, "country", "", "country code")
	fs.StringVar(&p.city, "city", "", "city")
	fs.StringVar(&p.isp, "isp", "", "ISP")
	fs.Int64Var(&p.asn, "asn", 0, "ASN")
	fs.Float64Var(&p.lat, "latitude", 0, "latitude, -90..90")
	fs.Float64Var(&p.lon, "longitude", 0, "longitude, -180..180")
	fs.IntVar(&p.maxConcurrency, "max-concurrency", 0, "leases at once (default unlimited)")
}

func (a *app) proxiesCmd() *cobra.Command {
	return group("proxies", "Add, import, list, show, update and delete proxies",
		a.proxiesAddCmd(), a.proxiesListCmd(), a.proxiesGetCmd(), a.proxiesUpdateCmd(), a.proxiesDeleteCmd(), a.importCmd())
}

func (a *app) proxiesAddCmd() *cobra.Command {
	var pool string
	var attrs proxyAttrs
	cmd := &cobra.Command{
		Use:   "add --pool POOL URL...",
		Short: "Add proxies given as URLs (scheme://[user:password@]host:port)",
		Long: `Add proxies given as URLs, scheme://[user:password@]host:port with scheme http
(the default when left out), https, socks4 or socks5. The attribute flags apply
to every proxy given. For files of proxies, see "pharox proxies import".`,
		Example: `  pharox proxies add --pool scrapers http://127.0.0.1:3128 --country AR --max-concurrency 1
  pharox proxies add --pool scrapers socks5://bot:s3cret@127.0.0.1:1080 --country BR`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pool == "" {
				return usageErrorf("--pool is required")
			}
			if len(args) == 0 {
				return usageErrorf("no proxy URL given")
			}
			if len(args) > model.MaxProxiesPerAdd {
				return usageErrorf("at most %d proxies at once; use pharox proxies import", model.MaxProxiesPerAdd)
			}
			inputs := make([]model.ProxyInput, len(args))
			for i, arg := range args {
				in, err := parseProxyURL(arg)
				if err != nil {
					return usageErrorf("%s: %v", arg, err)
				}
				if err := attrs.apply(&in); err != nil {
					return err
				}
				if err := validateInput(in); err != nil {
					return usageErrorf("%s: %v", arg, err)
				}
				inputs[i] = in
			}
			return send(a, cmd, func(c *client.Client, ctx context.Context) ([]model.Proxy, error) {
				return c.AddProxies(ctx, model.ProxiesAddRequest{PoolName: pool, Proxies: inputs})
			}, func(proxies []model.Proxy) error {
				if a.jsonOut {
					return a.printJSON(model.ProxiesReply{Proxies: proxies})
				}
				return a.printProxies(proxies)
			})
		},
	}
	cmd.Flags().StringVarP(&pool, "pool", "p", "", "pool to add to (required)")
	attrs.register(cmd.Flags())
	return cmd
}

// apply sets the attributes whose flags were given on in.
func (p *proxyAttrs) apply(in *model.ProxyInput) error {
	fs := p.fs
	if fs.Changed("status") {
		s := model.ProxyStatus(p.status)
		in.Status = &s
	}
	setIfGiven(fs, "source", &in.Source, &p.source)
	setIfGiven(fs, "country", &in.Country, &p.country)
	setIfGiven(fs, "city", &in.City, &p.city)
	setIfGiven(fs, "isp", &in.ISP, &p.isp)
	setIfGiven(fs, "asn", &in.ASN, &p.asn)
	setIfGiven(fs, "latitude", &in.Latitude, &p.lat)
	setIfGiven(fs, "longitude", &in.Longitude, &p.lon)
	setIfGiven(fs, "max-concurrency", &in.MaxConcurrency, &p.maxConcurrency)
	return nil
}

// parseProxyURL reads scheme://[user:password@]host:port; no scheme is http.
func parseProxyURL(s string) (model.ProxyInput, error) {
	var in model.ProxyInput
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return in, fmt.Errorf("not a proxy URL: %v", err)
	}
	proto := model.Protocol(strings.ToLower(u.Scheme))
	if !proto.Valid() {
		return in, fmt.Errorf("scheme must be http, https, socks4 or socks5, got %q", u.Scheme)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return in, fmt.Errorf("a proxy URL has no path, query or fragment")
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return in, fmt.Errorf("want host:port, got %q", u.Host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return in, fmt.Errorf("port must be a number, got %q", portStr)
	}
	in.Host, in.Port, in.Protocol = host, port, &proto
	if u.User != nil {
		pw, _ := u.User.Password()
		in.Credentials = &model.Credentials{User: u.User.Username(), Password: pw}
	}
	return in, nil
}

// validateInput applies the worker's rules for one proxy, so a bad line is
// caught before it can make a whole batch refused.
func validateInput(in model.ProxyInput) error {
	switch {
	case in.Host == "" || len(in.Host) > 255:
		return fmt.Errorf("host must be 1..255 characters")
	case in.Port < 1 || in.Port > 65535:
		return fmt.Errorf("port must be in 1..65535, got %d", in.Port)
	case in.Protocol != nil && !in.Protocol.Valid():
		return fmt.Errorf("protocol must be http, https, socks4 or socks5, got %q", *in.Protocol)
	case in.Status != nil && !in.Status.Valid():
		return fmt.Errorf("status must be active, inactive, slow or banned, got %q", *in.Status)
	case in.Latitude != nil && (*in.Latitude < -90 || *in.Latitude > 90 || *in.Latitude != *in.Latitude):
		return fmt.Errorf("latitude must be in [-90, 90], got %v", *in.Latitude)
	case in.Longitude != nil && (*in.Longitude < -180 || *in.Longitude > 180 || *in.Longitude != *in.Longitude):
		return fmt.Errorf("longitude must be in [-180, 180], got %v", *in.Longitude)
	case in.MaxConcurrency != nil && *in.MaxConcurrency < 1:
		return fmt.Errorf("max_concurrency must be a positive integer (leave it out for unlimited), got %d", *in.MaxConcurrency)
	case in.Credentials != nil && (in.Credentials.User == "" || in.Credentials.Password == ""):
		return fmt.Errorf("credentials need both a user and a password (leave them out for none)")
	}
	return nil
}

func (a *app) printProxies(proxies []model.Proxy) error {
	w := a.table()
	fmt.Fprintln(w, "ID\tPROTOCOL\tHOST\tPORT\tSTATUS\tCOUNTRY\tCITY\tSOURCE\tLEASES")
	for _, p := range proxies {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d/%s\n", p.ID, p.Protocol, p.Host, p.Port, p.Status,
			orDash(p.Country), orDash(p.City), orDash(p.Source), p.CurrentLeases, dashOr(p.MaxConcurrency, strconv.Itoa))
	}
	return w.Flush()
}

func (a *app) printProxy(p model.Proxy) error {
	if a.jsonOut {
		return a.printJSON(p)
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	limit, user := "unlimited", "-"
	if p.MaxConcurrency != nil {
		limit = strconv.Itoa(*p.MaxConcurrency)
	}
	if p.Credentials != nil {
		user = p.Credentials.User
	}
	return a.kv(
		[2]string{"id", p.ID},
		[2]string{"pool", p.PoolName},
		[2]string{"url", redactURL(p.URL)},
		[2]string{"user", user},
		[2]string{"status", string(p.Status)},
		[2]string{"checked_at", fmtTimePtr(p.CheckedAt)},
		[2]string{"country", orDash(p.Country)},
		[2]string{"city", orDash(p.City)},
		[2]string{"source", orDash(p.Source)},
		[2]string{"isp", orDash(p.ISP)},
		[2]string{"asn", dashOr(p.ASN, func(n int64) string { return strconv.FormatInt(n, 10) })},
		[2]string{"latitude", dashOr(p.Latitude, f)},
		[2]string{"longitude", dashOr(p.Longitude, f)},
		[2]string{"max_concurrency", limit},
		[2]string{"current_leases", strconv.Itoa(p.CurrentLeases)},
		[2]string{"latency", dashOr(p.LatencyMs, fmtMs)},
		[2]string{"consecutive_failures", strconv.Itoa(p.ConsecutiveFailures)},
		[2]string{"cooldown_until", fmtTimePtr(p.CooldownUntil)},
	)
}

func (a *app) proxiesListCmd() *cobra.Command {
	var pool, status string
	var limit int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "list --pool POOL",
		Short: "List a pool's proxies in added order",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pool == "" {
				return usageErrorf("--pool is required")
			}
			if limit < 0 {
				return usageErrorf("--limit must be >= 0, got %d", limit)
			}
			req := model.ProxiesListRequest{PoolName: pool, Limit: ptr(model.MaxListLimit)}
			if status != "" {
				s := model.ProxyStatus(status)
				req.Status = &s
			}
			return send(a, cmd, func(c *client.Client, ctx context.Context) ([]model.Proxy, error) {
				proxies := []model.Proxy{}
				for p, err := range c.AllProxies(ctx, req) {
					if err != nil {
						return nil, err
					}
					proxies = append(proxies, p)
					if limit > 0 && len(proxies) == limit {
						break
					}
				}
				return proxies, nil
			}, func(proxies []model.Proxy) error {
				switch {
				case a.jsonOut:
					return a.printJSON(model.ProxiesReply{Proxies: proxies})
				case quiet:
					for _, p := range proxies {
						fmt.Fprintln(a.stdout, p.ID)
					}
					return nil
				}
				return a.printProxies(proxies)
			})
		},
	}
	cmd.Flags().StringVarP(&pool, "pool", "p", "", "pool name (required)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the proxy ids, one a line")
	cmd.Flags().StringVar(&status, "status", "", "only proxies of this status")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many (0: all)")
	return cmd
}

func (a *app) proxiesGetCmd() *cobra.Command {
	return showCmd(a, "get PROXY_ID", "Show a proxy (its password is masked; --json shows it)", "one PROXY_ID",
		(*client.Client).GetProxy, a.printProxy)
}

func (a *app) proxiesUpdateCmd() *cobra.Command {
	var attrs proxyAttrs
	var host, protocol, user, password string
	var port, failures int
	var clear []string
	var cooldownUntil string
	cmd := &cobra.Command{
		Use:   "update PROXY_ID [flags]",
		Short: "Change a proxy's fields; --clear sets nullable ones to null",
		Example: `  pharox proxies update 9b2f... --status banned
  pharox proxies update 9b2f... --max-concurrency 4 --clear city,isp
  pharox proxies update 9b2f... --consecutive-failures 0 --clear cooldown_until   # back in rotation`,
		Args: exactArgs(1, "one PROXY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			req := model.ProxyUpdateRequest{ProxyID: args[0]}
			setIfGiven(fs, "host", &req.Host, model.Some(host))
			setIfGiven(fs, "port", &req.Port, model.Some(port))
			setIfGiven(fs, "protocol", &req.Protocol, model.Some(model.Protocol(protocol)))
			var in model.ProxyInput
			if err := attrs.apply(&in); err != nil {
				return err
			}
			if in.Status != nil {
				req.Status = model.Some(*in.Status)
			}
			setOpt(&req.Source, in.Source)
			setOpt(&req.Country, in.Country)
			setOpt(&req.City, in.City)
			setOpt(&req.ISP, in.ISP)
			setOpt(&req.ASN, in.ASN)
			setOpt(&req.Latitude, in.Latitude)
			setOpt(&req.Longitude, in.Longitude)
			setOpt(&req.MaxConcurrency, in.MaxConcurrency)
			if fs.Changed("user") || fs.Changed("password") {
				if user == "" || password == "" {
					return usageErrorf("credentials need both --user and --password (or --clear credentials)")
				}
				req.Credentials = model.Some(model.Credentials{User: user, Password: password})
			}
			if fs.Changed("consecutive-failures") {
				if failures < 0 {
					return usageErrorf("--consecutive-failures must be >= 0, got %d", failures)
				}
				req.ConsecutiveFailures = model.Some(failures)
			}
			if fs.Changed("cooldown-until") {
				t, err := parseWhen(cooldownUntil, time.Now())
				if err != nil {
					return usageErrorf("--cooldown-until: %v", err)
				}
				req.CooldownUntil = model.Some(t.UTC().Format(time.RFC3339Nano))
			}
			for _, field := range clear {
				switch strings.ReplaceAll(strings.TrimSpace(field), "-", "_") {
				case "source":
					req.Source = model.Null[string]()
				case "country":
					req.Country = model.Null[string]()
				case "city":
					req.City = model.Null[string]()
				case "isp":
					req.ISP = model.Null[string]()
				case "asn":
					req.ASN = model.Null[int64]()
				case "latitude":
					req.Latitude = model.Null[float64]()
				case "longitude":
					req.Longitude = model.Null[float64]()
				case "max_concurrency":
					req.MaxConcurrency = model.Null[int]()
				case "credentials":
					req.Credentials = model.Null[model.Credentials]()
				case "cooldown_until":
					req.CooldownUntil = model.Null[string]()
				default:
					return usageErrorf("--clear %q: only source, country, city, isp, asn, latitude, longitude, max_concurrency, credentials and cooldown_until can be cleared", field)
				}
			}
			return send(a, cmd, bind((*client.Client).UpdateProxy, req), a.printProxy)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&host, "host", "", "host name or address")
	fs.IntVar(&port, "port", 0, "port, 1..65535")
	fs.StringVar(&protocol, "protocol", "", "http, https, socks4 or socks5")
	fs.StringVar(&user, "user", "", "credentials: user name")
	fs.StringVar(&password, "password", "", "credentials: password")
	fs.StringSliceVar(&clear, "clear", nil, "comma-separated fields to set to null (e.g. city,max_concurrency,cooldown_until)")
	fs.IntVar(&failures, "consecutive-failures", 0, "set the failures counted since the last success")
	fs.StringVar(&cooldownUntil, "cooldown-until", "", "keep the proxy out of rotation until this time (RFC 3339, or a duration from now such as 10m)")
	attrs.register(fs)
	return cmd
}

func setOpt[T any](dst *model.Optional[T], v *T) {
	if v != nil {
		*dst = model.Some(*v)
	}
}

func (a *app) proxiesDeleteCmd() *cobra.Command {
	return a.deleteCmd("proxy", "delete PROXY_ID", "Delete a proxy (--force releases its active leases first)", "one PROXY_ID",
		"release the proxy's active leases and delete anyway",
		func(c *client.Client, ctx context.Context, id string, force bool) error {
			return c.DeleteProxy(ctx, model.ProxyDeleteRequest{ProxyID: id, Force: force})
		})
}

func (a *app) consumersCmd() *cobra.Command {
	ensure := showCmd(a, "ensure NAME", "Register a consumer if needed and show it (same id every time)", "one consumer NAME",
		(*client.Client).EnsureConsumer, single(a, a.printConsumers))
	list := listCmd(a, "List consumers", (*client.Client).ListConsumers,
		func(cons []model.Consumer) any { return model.ConsumersReply{Consumers: cons} }, a.printConsumers)
	return group("consumers", "Register and list consumers", ensure, list)
}

func (a *app) printConsumers(cons ...model.Consumer) error {
	w := a.table()
	fmt.Fprintln(w, "NAME\tID")
	for _, c := range cons {
		fmt.Fprintf(w, "%s\t%s\n", c.Name, c.ID)
	}
	return w.Flush()
}

func ptr[T any](v T) *T { return &v }
