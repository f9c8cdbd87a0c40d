package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
)

func (a *app) healthCmd() *cobra.Command {
	return group("health", "Check proxies, show and record health results", a.healthCheckCmd(), a.healthLastCmd(), a.healthApplyCmd())
}

func (a *app) healthCheckCmd() *cobra.Command {
	var pool, target string
	var limit, attempts int
	var timeout, slowMs float64
	var expect []int
	cmd := &cobra.Command{
		Use:   "check (PROXY_ID | --pool POOL)",
		Short: "Probe a proxy, or a pool's proxies, now and record the results",
		Long: `Probe one proxy, or every proxy of a pool (at most --limit), through the
workers, with the pool's health-check options or the ones given here, and
record each result as a sweep would (status, checked_at, latency). It waits
for the probes: give --timeout enough for them.`,
		Example: `  pharox health check 9b2f...
  pharox health check --pool scrapers --health-url https://example.com/ --timeout 60s`,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := model.HealthCheckRequest{}
			switch {
			case len(args) == 1 && pool == "":
				req.ProxyID = &args[0]
			case len(args) == 0 && pool != "":
				req.PoolName = &pool
				setIfGiven(cmd.Flags(), "limit", &req.Limit, &limit)
			default:
				return usageErrorf("give one PROXY_ID or --pool POOL")
			}
			fs := cmd.Flags()
			if fs.Changed("health-url") || fs.Changed("attempts") || fs.Changed("probe-timeout") || fs.Changed("expect") || fs.Changed("slow-ms") {
				// An empty target_url takes the pool's.
				req.Options = &model.HealthCheckOptions{TargetURL: target, Timeout: timeout, Attempts: attempts,
					ExpectedStatusCodes: expect, SlowThresholdMs: slowMs, AllowRedirects: true, Headers: map[string]string{}}
			}
			return send(a, cmd, bind((*client.Client).HealthCheck, req),
				listed(a, func(results []model.HealthCheckResult) any { return model.HealthCheckReply{Results: results} }, a.printResults))
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&pool, "pool", "p", "", "probe this pool's proxies")
	fs.IntVar(&limit, "limit", model.DefaultListLimit, "with --pool: the most proxies the pool may have for this check (1..1000)")
	fs.StringVar(&target, "health-url", "", "fetch this URL through the proxy (default: the pool's)")
	fs.Float64Var(&timeout, "probe-timeout", 5, "seconds per attempt")
	fs.IntVar(&attempts, "attempts", 1, "attempts, 1..5")
	fs.IntSliceVar(&expect, "expect", []int{200}, "status codes that count as good")
	fs.Float64Var(&slowMs, "slow-ms", 2000, "a good answer slower than this marks the proxy slow")
	return cmd
}

func (a *app) healthLastCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "last PROXY_ID",
		Short: "Show the last health result recorded for a proxy",
		Args:  exactArgs(1, "one PROXY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return send(a, cmd, bind((*client.Client).LastHealth, args[0]), func(res *model.HealthCheckResult) error {
				if a.jsonOut {
					return a.printJSON(model.HealthLastReply{Result: res})
				}
				if res == nil {
					fmt.Fprintf(a.stdout, "proxy %s has no health result yet\n", args[0])
					return nil
				}
				return a.printResults(*res)
			})
		},
	}
}

func (a *app) healthApplyCmd() *cobra.Command {
	var status, protocol, checkedAt, errMsg string
	var latency float64
	var attempts, code int
	cmd := &cobra.Command{
		Use:   "apply PROXY_ID --status STATUS --latency MS --protocol PROTOCOL",
		Short: "Record a health result measured elsewhere (sets the proxy's status)",
		Example: `  pharox health apply 9b2f... --status active --latency 120 --protocol http --status-code 200
  pharox health apply 9b2f... --status inactive --latency 5000 --protocol socks5 --error "connection refused"`,
		Args: exactArgs(1, "one PROXY_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			for _, f := range []string{"status", "latency", "protocol"} {
				if !fs.Changed(f) {
					return usageErrorf("--%s is required", f)
				}
			}
			req := model.HealthApplyRequest{ProxyID: args[0], Status: model.ProxyStatus(status), LatencyMs: latency, Protocol: model.Protocol(protocol)}
			if !req.Status.Valid() {
				return usageErrorf("--status must be active, inactive, slow or banned, got %q", status)
			}
			if !req.Protocol.Valid() {
				return usageErrorf("--protocol must be http, https, socks4 or socks5, got %q", protocol)
			}
			setIfGiven(fs, "attempts", &req.Attempts, &attempts)
			setIfGiven(fs, "status-code", &req.StatusCode, &code)
			if fs.Changed("checked-at") {
				t, err := parseWhen(checkedAt, time.Now())
				if err != nil {
					return usageErrorf("--checked-at: %v", err)
				}
				s := t.UTC().Format(time.RFC3339Nano)
				req.CheckedAt = &s
			}
			setIfGiven(fs, "error", &req.ErrorMessage, &errMsg)
			return send(a, cmd, bind((*client.Client).ApplyHealth, req), a.printProxy)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&status, "status", "", "the status measured: active, inactive, slow or banned")
	fs.Float64Var(&latency, "latency", 0, "the latency measured, in milliseconds")
	fs.StringVar(&protocol, "protocol", "", "the protocol checked: http, https, socks4 or socks5")
	fs.IntVar(&attempts, "attempts", 1, "attempts made, 1..5")
	fs.IntVar(&code, "status-code", 0, "the HTTP status the target answered")
	fs.StringVar(&checkedAt, "checked-at", "", "when it was measured (RFC 3339; default now)")
	fs.StringVar(&errMsg, "error", "", "what went wrong")
	return cmd
}

func (a *app) printResults(results ...model.HealthCheckResult) error {
	w := a.table()
	fmt.Fprintln(w, "PROXY_ID\tSTATUS\tLATENCY\tCODE\tATTEMPTS\tCHECKED_AT\tERROR")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ProxyID, r.Status, fmtMs(r.LatencyMs), dashOr(r.StatusCode, strconv.Itoa), r.Attempts, fmtTime(r.CheckedAt), orDash(r.ErrorMessage))
	}
	return w.Flush()
}
