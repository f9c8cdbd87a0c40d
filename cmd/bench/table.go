package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
)

// measures are the figures of the performance issue's target table that
// the scenarios of a run measured; nil (or empty) when not measured.
type measures struct {
	vsFloor    *float64 // scenario 1: pairs/s at 32 clients / contract floor at 32
	workerCPU  *float64 // scenario 1: bench-process CPU µs per pair, 1 worker, 32 clients
	twoVsOne   *float64 // scenario 1: total CPU per pair, 2 workers / 1 worker, 32 clients
	rounds     int      // scenario 1: the three above are medians of this many rounds
	lastFirst  *float64 // scenario 5: last 10,000 / first 10,000
	trend      *float64 // scenario 5: the per-20k series' fitted line, end / start
	history    int      // scenario 5: pairs run
	rss        *float64 // scenario 7: RSS bytes per proxy right after loading
	rssProxies int
	// scenario 12 (--proxies N)
	scaleN      int
	loadSeconds *float64
	loadRSSMB   *float64
	serverRSSMB *float64
	selectorP99 map[string]float64 // ms
	// randomRawP99 is the p99 of raw KV get+update of as many random keys
	// of the pool as the random selector acquired, blocks uncached at the
	// start: the server's part of the random selector's p99.
	randomRawP99 *float64 // ms
	// list pages: ms per page at the pool's start and at listPos (scenario
	// 2 on --big, or 12 on --proxies, whichever is larger)
	listAt0, listAtPos *float64
	listPos            int
}

// tableRow is one row of the issue's target table.
type tableRow struct {
	Measure  string  `json:"measure"`
	Measured bool    `json:"measured"`
	Value    float64 `json:"value,omitempty"`
	Unit     string  `json:"unit"`
	Target   string  `json:"target"`
	Met      bool    `json:"met"`
	Note     string  `json:"note,omitempty"`
}

func atLeast(v *float64, need float64) (bool, string) {
	return v != nil && *v >= need, fmt.Sprintf(">= %g", need)
}

func atMost(v *float64, need float64) (bool, string) {
	return v != nil && *v <= need, fmt.Sprintf("<= %g", need)
}

// issueTable builds the rows of the target table from what the run
// measured; a row not measured says which scenario or flag measures it.
func issueTable(m measures) []tableRow {
	var rows []tableRow
	add := func(name string, v *float64, unit string, check func(*float64, float64) (bool, string), need float64, how, note string) {
		met, tgt := check(v, need)
		r := tableRow{Measure: name, Unit: unit, Target: tgt, Met: met, Note: note}
		if v != nil {
			r.Measured, r.Value = true, *v
		} else {
			r.Note = "run " + how
		}
		rows = append(rows, r)
	}
	rounds := ""
	if m.rounds > 0 {
		rounds = fmt.Sprintf("median of %d rounds", m.rounds)
	}
	add("pairs/s at 32 clients vs contract floor at 32", m.vsFloor, "x", atLeast, 0.8, "--scenarios 1", rounds)
	add("worker CPU µs per pair (bench column, 1 worker, 32 clients)", m.workerCPU, "µs", atMost, 120, "--scenarios 1", strings.TrimPrefix(rounds+"; bench process: worker and clients", "; "))
	hist := "last 10,000 vs first 10,000 pairs"
	if m.history > 0 {
		hist = fmt.Sprintf("last 10,000 vs first 10,000 of %d pairs", m.history)
	}
	add(hist, m.lastFirst, "x", atLeast, 0.95, "--scenarios 5", "")
	add("  no downward trend: per-20k series' fitted line, end vs start", m.trend, "x", atLeast, 0.95, "--scenarios 5", "")
	rssName := "worker RSS growth per proxy right after loading"
	if m.rssProxies > 0 {
		rssName = fmt.Sprintf("worker RSS growth per proxy right after loading %d", m.rssProxies)
	}
	add(rssName, m.rss, "B", atMost, 600, "--scenarios 7", "")
	scale := "--proxies 1000000"
	n := "1,000,000"
	if m.scaleN > 0 {
		n = fmt.Sprint(m.scaleN)
	}
	add(n+" proxies in one pool: replica load time of a fresh worker", m.loadSeconds, "s", atMost, 5, scale, "")
	srv := ""
	if m.serverRSSMB != nil {
		srv = fmt.Sprintf("nats-server %.0f MB", *m.serverRSSMB)
	}
	add(n+" proxies: worker RSS after the load", m.loadRSSMB, "MB", atMost, 600, scale, srv)
	var worst *float64
	var each []string
	for _, sel := range slices.Sorted(maps.Keys(m.selectorP99)) {
		v := m.selectorP99[sel]
		each = append(each, fmt.Sprintf("%s %.2f", sel, v))
		if worst == nil || v > *worst {
			worst = &v
		}
	}
	if m.randomRawP99 != nil {
		each = append(each, fmt.Sprintf("raw KV get+update of random keys, no pharox code: %.2f", *m.randomRawP99))
	}
	add(n+" proxies: acquire p99, 1 client, worst selector", worst, "ms", atMost, 2, scale, strings.Join(each, ", "))
	var listRatio *float64
	note := ""
	if m.listAt0 != nil && m.listAtPos != nil {
		r := *m.listAtPos / *m.listAt0
		listRatio = &r
		note = fmt.Sprintf("%.2f ms at %d vs %.2f ms at 0 (pages of 100)", *m.listAtPos, m.listPos, *m.listAt0)
	}
	add("admin.proxies.list page from a cursor deep in the pool vs at its start", listRatio, "x", atMost, 1.5, "--scenarios 2 (at --big/2) or "+scale+" (at 500,000)", note)
	add("2 workers vs 1 worker: total CPU (server + bench) per pair, 32 clients", m.twoVsOne, "x", atMost, 1.3, "--scenarios 1", rounds)
	return rows
}

func printIssueTable(w io.Writer, rows []tableRow) {
	printTargetRows(w, "performance targets (issue 17):", rows)
}

func printTargetRows(w io.Writer, title string, rows []tableRow) {
	fmt.Fprintln(w, title)
	for _, r := range rows {
		verdict, val := "NOT MET", "-"
		if r.Measured {
			val = fmt.Sprintf("%.2f %s", r.Value, r.Unit)
			if r.Met {
				verdict = "MET"
			}
		} else {
			verdict = "NOT MEASURED"
		}
		if r.Target == "-" {
			verdict = "(no target)"
		}
		note := ""
		if r.Note != "" {
			note = " (" + r.Note + ")"
		}
		fmt.Fprintf(w, "  %-80s %14s  target %-7s %s%s\n", r.Measure, val, r.Target, verdict, note)
	}
}

// trendRatio fits a least-squares line through the series and returns its
// value at the last point over its value at the first: 1 is flat, below 1
// a decline across the run.
func trendRatio(series []float64) float64 {
	n := float64(len(series))
	if n < 2 {
		return 1
	}
	var sx, sy, sxx, sxy float64
	for i, y := range series {
		x := float64(i)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	icpt := (sy - slope*sx) / n
	start, end := icpt, icpt+slope*(n-1)
	if start <= 0 || math.IsNaN(start) {
		return 0
	}
	return end / start
}

func ptr(v float64) *float64 { return &v }
