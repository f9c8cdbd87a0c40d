// Command bench measures the pharox worker over NATS against the raw speed of
// the substrate measured in the same run: JetStream KV get+CAS on distinct
// keys and core request-reply. Every figure is printed beside its ratio to
// that baseline, because these machines are noisy.
//
//	go run ./cmd/bench                      # every scenario, table on stdout
//	go run ./cmd/bench --scenarios 1,6 --json
//	go run ./cmd/bench --cluster 3 --shards 1,3 --duration 10s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pharox/pharox-nats/internal/natscluster"
	"github.com/pharox/pharox-nats/kvstore"
)

type benchConfig struct {
	natsURL   string
	duration  time.Duration
	scenarios map[int]bool
	json      bool
	history   int
	big       int
	proxies   int
	scaleProf string
	selectors string
	cpuprof   string
	// gwprof: scenario 8 writes a CPU profile of its sticky-session run
	// here, each side's goroutines labelled side=...
	gwprof string
	// rounds: scenario 1 measures its targets in this many alternating
	// rounds of contract floor, 1 worker and 2 workers at 32 clients
	rounds int
	// scenario 13: a cluster of this many nodes (0: not run), one fresh
	// cluster per shard count
	cluster         int
	shards          []int
	clusterPools    int
	clusterPoolSize int
	clusterClients  int
	clusterWatcher  bool
}

// row is one line of the report.
type row struct {
	Scenario string  `json:"scenario"`
	Case     string  `json:"case"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Ratio    float64 `json:"ratio,omitempty"`
	RatioOf  string  `json:"ratio_of,omitempty"`
	P50Ms    float64 `json:"p50_ms,omitempty"`
	P99Ms    float64 `json:"p99_ms,omitempty"`
	Note     string  `json:"note,omitempty"`
	// CPU is the CPU microseconds per operation (pair, or baseline op) of
	// the server process + the bench process, "?" when the server is not
	// ours to measure.
	CPU string `json:"cpu_us_per_op,omitempty"`
}

// report collects rows and the targets' verdicts.
type report struct {
	Rows      []row    `json:"rows"`
	Targets   []target `json:"targets"`
	OverLease bool     `json:"over_lease"`
	Seconds   float64  `json:"seconds"`
	// Table is the performance issue's target table, from M.
	Table []tableRow `json:"issue_targets"`
	// Cluster is the cluster issue's target table (scenario 13).
	Cluster []tableRow `json:"cluster_targets,omitempty"`
	M       measures   `json:"-"`
}

type target struct {
	Name     string  `json:"name"`
	Measured float64 `json:"measured"`
	Needed   float64 `json:"needed"`
	Met      bool    `json:"met"`
}

func main() {
	// Scenario 13 runs its cluster's nodes as child processes of this binary.
	natscluster.RunNodeIfAsked()
	if len(os.Args) > 2 && os.Args[1] == serveNATSArg {
		serveNATS(os.Args[2])
		return
	}
	if len(os.Args) > 2 && os.Args[1] == watchWorkerArg {
		serveWatcher(os.Args[2:])
		return
	}
	if len(os.Args) > 2 && os.Args[1] == serveWorkerArg {
		serveWorker(os.Args[2])
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if cfg.cpuprof != "" {
		f, err := os.Create(cfg.cpuprof)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var rep report
	if !standaloneOnly(cfg) {
		rep, err = run(ctx, cfg)
	}
	if err == nil && cfg.scenarios[gatewayScenario] {
		err = runGatewayScenario(ctx, cfg, &rep)
	}
	if err == nil && cfg.scenarios[credentialsScenario] {
		err = runCredentialsScenario(ctx, cfg, &rep)
	}
	if err == nil && cfg.scenarios[observeScenario] {
		err = runObserveScenario(ctx, cfg, &rep) // observe.go
	}
	if err == nil && cfg.scenarios[clusterScenarioN] {
		err = runClusterScenario(ctx, cfg, &rep) // cluster.go
	}
	if err == nil && cfg.scenarios[fanoutScenarioN] {
		err = runFanoutScenario(ctx, cfg, &rep) // fanout.go
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	rep.Table = issueTable(rep.M)
	if cfg.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printTable(rep)
	}
	if rep.OverLease {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func parseFlags(args []string) (benchConfig, error) {
	var cfg benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&cfg.natsURL, "nats-url", "", "use this NATS server (JetStream enabled) instead of starting one as a child process")
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "how long each measured point runs")
	list := fs.String("scenarios", "1,2,3,4,5,6,7,8,9,10,11", "comma-separated scenarios to run (see README: 1 clients, 2 pool size, 3 filters, 4 selectors, 5 history, 6 hot pool, 7 memory, 8 gateway, 9 feedback, 10 credentials encryption, 11 metrics and tracing cost, 12 scale: one pool of --proxies, not in the default list, 13 cluster: --cluster N, not in the default list, 14 watch fan-out: KV watch vs RePublish server cost, not in the default list)")
	fs.IntVar(&cfg.cluster, "cluster", 0, "run scenario 13 (only it, unless --scenarios is given): a cluster of this many NATS nodes in child processes, one worker per node with R3 buckets, pairs/s, server CPU per pair and each node's share of the writes for every --shards count (a fresh cluster each)")
	shardList := fs.String("shards", "1,3", "comma-separated shard counts scenario 13 measures, each on a fresh cluster, in this order; a count given twice (1,3,1,3) is measured in rounds and its targets count all of them")
	fs.IntVar(&cfg.clusterPools, "cluster-pools", 30, "pools of scenario 13")
	fs.IntVar(&cfg.clusterPoolSize, "cluster-pool-size", 50, "proxies per pool of scenario 13 (max_concurrency 1)")
	fs.IntVar(&cfg.clusterClients, "cluster-clients", 32, "clients of scenario 13, client i on pool i mod --cluster-pools")
	fs.BoolVar(&cfg.clusterWatcher, "cluster-watcher", true, "scenario 13 also runs a watch-only worker (no requests served) in a child process and reports its CPU per watched write: what each worker's replica costs")
	fs.BoolVar(&cfg.json, "json", false, "print the report as JSON instead of a table")
	fs.IntVar(&cfg.history, "history", 200000, "pairs completed in the history scenario before the last 10,000 are compared with the first 10,000")
	fs.IntVar(&cfg.big, "big", 100000, "proxies in the large pool of scenarios 2, 3 and 7")
	fs.IntVar(&cfg.proxies, "proxies", 0, "run scenario 12 (scale): a pool of this many proxies (e.g. 1000000): a fresh worker's load time and RSS, acquire p99 of each selector with 1 client, list pages deep in the pool")
	fs.StringVar(&cfg.scaleProf, "scale-cpuprofile", "", "write a CPU profile of the bench process during scenario 12's selector runs only (not with --cpuprofile)")
	fs.StringVar(&cfg.selectors, "scale-selectors", "", "comma-separated selectors scenario 12 measures (default: all)")
	fs.IntVar(&cfg.rounds, "rounds", 3, "scenario 1 measures its targets (vs the contract floor, worker CPU per pair, 2 workers vs 1) in this many alternating rounds of floor, 1 worker and 2 workers at 32 clients, and reports their medians: the machine's speed drifts between runs far more than between neighbouring runs; scenario 8 measures its sticky-session target in as many alternating rounds of direct and via the gateway")
	fs.StringVar(&cfg.cpuprof, "cpuprofile", "", "write a CPU profile of the bench process (clients and in-process workers) to this file")
	fs.StringVar(&cfg.gwprof, "gateway-cpuprofile", "", "write a CPU profile of the bench process during scenario 8's sticky-session run only; the goroutines of each side carry the label side=gateway, upstream, target or client (go tool pprof -tagfocus side=gateway; -tags for each side's share) (not with --cpuprofile)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.gwprof != "" && cfg.cpuprof != "" {
		return cfg, fmt.Errorf("--gateway-cpuprofile and --cpuprofile: one CPU profile at a time")
	}
	listed := false
	fs.Visit(func(f *flag.Flag) { listed = listed || f.Name == "scenarios" })
	if cfg.cluster > 0 && !listed {
		*list = strconv.Itoa(clusterScenarioN)
	}
	cfg.scenarios = map[int]bool{}
	for _, s := range strings.Split(*list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > lastScenario {
			return cfg, fmt.Errorf("--scenarios: %q is not a scenario 1..%d", s, lastScenario)
		}
		cfg.scenarios[n] = true
	}
	if cfg.proxies > 0 {
		cfg.scenarios[scaleScenarioN] = true
	} else if cfg.scenarios[scaleScenarioN] {
		cfg.proxies = 1000000
	}
	if cfg.scenarios[clusterScenarioN] {
		if cfg.cluster == 0 {
			cfg.cluster = 3
		}
		for _, v := range strings.Split(*shardList, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 1 || n > kvstore.MaxShards {
				return cfg, fmt.Errorf("--shards: %q is not a shard count 1..%d", v, kvstore.MaxShards)
			}
			cfg.shards = append(cfg.shards, n)
		}
		if cfg.cluster < 1 || cfg.clusterPools < 1 || cfg.clusterPoolSize < 1 || cfg.clusterClients < 1 {
			return cfg, fmt.Errorf("--cluster, --cluster-pools, --cluster-pool-size and --cluster-clients must be positive")
		}
		if cfg.natsURL != "" {
			return cfg, fmt.Errorf("scenario 13 starts its own clusters: not with --nats-url")
		}
	}
	if cfg.rounds < 1 {
		return cfg, fmt.Errorf("--rounds must be at least 1")
	}
	if cfg.history < 20000 {
		return cfg, fmt.Errorf("--history must be at least 20000 (first and last 10,000 pairs)")
	}
	return cfg, nil
}

func printTable(rep report) {
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "scenario\tcase\tvalue\tunit\tratio\tp50 ms\tp99 ms\tcpu µs/op srv+bench\tnote")
	for _, r := range rep.Rows {
		ratio := ""
		if r.RatioOf != "" {
			ratio = fmt.Sprintf("%.2f x %s", r.Ratio, r.RatioOf)
		}
		fmt.Fprintf(w, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Case, r.Value, r.Unit, ratio, ms(r.P50Ms), ms(r.P99Ms), r.CPU, r.Note)
	}
	_ = w.Flush()
	fmt.Println()
	for _, t := range rep.Targets {
		verdict := "MET"
		if !t.Met {
			verdict = "NOT MET"
		}
		fmt.Printf("target %-55s measured %.2f, needs %.2f: %s\n", t.Name, t.Measured, t.Needed, verdict)
	}
	measured := false
	for _, r := range rep.Table {
		measured = measured || r.Measured
	}
	if measured || len(rep.Cluster) == 0 {
		fmt.Println()
		printIssueTable(os.Stdout, rep.Table)
	}
	if len(rep.Cluster) > 0 {
		fmt.Println()
		printTargetRows(os.Stdout, "cluster targets (issue 16):", rep.Cluster)
	}
	if rep.OverLease {
		fmt.Println("OVER-LEASE DETECTED: a proxy held more leases than its max_concurrency")
	} else {
		fmt.Println("no over-lease in any scenario (checked on every lease of every limited pool)")
	}
	fmt.Printf("total %.0fs\n", rep.Seconds)
}

func ms(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", v)
}
