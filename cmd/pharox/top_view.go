package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/pharox/pharox-nats/client"
)

// ANSI sequences of the live view.
const (
	ansiHome       = "\x1b[H"
	ansiClear      = "\x1b[2J"
	ansiHideCursor = "\x1b[?25l"
	ansiShowCursor = "\x1b[?25h"
)

// runTop redraws the pools every o.interval until q (or Ctrl-C) is
// pressed or ctx ends. On a terminal, stdin is put in raw mode so that a
// key needs no Enter.
func (a *app) runTop(ctx context.Context, c *client.Client, r *rates, o topOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		state, err := term.MakeRaw(int(f.Fd()))
		if err == nil {
			defer func() { _ = term.Restore(int(f.Fd()), state) }()
		}
	}
	go watchKeys(a.stdin, cancel)
	fmt.Fprint(a.stdout, ansiHideCursor)
	defer fmt.Fprint(a.stdout, ansiShowCursor)

	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		snap, err := a.topSnapshot(ctx, c, r, o)
		if ctx.Err() != nil {
			return nil
		}
		if _, werr := io.WriteString(a.stdout, topFrame(snap, o, err)); werr != nil {
			return werr
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// watchKeys calls quit on q, Q, Ctrl-C or Ctrl-D. At the end of input
// (not a terminal) it stops reading and top goes on until interrupted.
func watchKeys(in io.Reader, quit func()) {
	buf := make([]byte, 64)
	for {
		n, err := in.Read(buf)
		for _, b := range buf[:n] {
			if b == 'q' || b == 'Q' || b == 3 || b == 4 {
				quit()
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// topFrame is one screen: a header line and a row per pool. Lines end in
// \r\n, since a terminal in raw mode does not turn \n into one.
func topFrame(snap TopSnapshot, o topOptions, err error) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "pharox top  %s  %d pool(s)  rates over %s  q quits\n\n", snap.CollectedAt.Format("15:04:05"), len(snap.Pools), o.window)
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n\n", err)
	}
	// Numbers align right; the pool names, padded to one width, left.
	width := len("POOL")
	for _, p := range snap.Pools {
		width = max(width, len(p.PoolName))
	}
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	// COOLING: active proxies in cooldown (counted in ACTIVE, not in
	// AVAILABLE).
	fmt.Fprintf(w, "%-*s\tPROXIES\tACTIVE\tAVAILABLE\tLEASED\tCOOLING\tLEASES\tACQUIRES/S\tNONE FREE/S\t\n", width, "POOL")
	for _, p := range snap.Pools {
		fmt.Fprintf(w, "%-*s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t\n", width, p.PoolName, p.TotalProxies, p.ActiveProxies, p.AvailableProxies,
			p.LeasedProxies, p.CoolingProxies, p.TotalLeases, p.AcquiresPerSecond, p.NoneFreePerSecond)
	}
	_ = w.Flush()
	return ansiHome + ansiClear + strings.ReplaceAll(b.String(), "\n", "\x1b[K\r\n")
}
