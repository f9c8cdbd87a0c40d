package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pharox/pharox-nats/model"
)

// proxyEnv are the variables `pharox run` sets to the proxy URL.
var proxyEnv = []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}

func (a *app) runCmd() *cobra.Command {
	var f acquireFlags
	var verbose, noOutcome bool
	cmd := &cobra.Command{
		Use:   "run --pool POOL [filters] -- COMMAND [ARGS...]",
		Short: "Run a command through a leased proxy",
		Long: `Lease a proxy, run COMMAND with HTTP_PROXY, HTTPS_PROXY, ALL_PROXY (and their
lower-case forms) set to the proxy URL, renew the lease every half of its
duration while the command runs, release it when the command exits, and exit
with the command's status (128+N when a signal N ended it).

The command also gets PHAROX_LEASE_ID, PHAROX_PROXY_ID and PHAROX_PROXY_URL.
SIGINT and SIGTERM are forwarded to it. If a renewal fails (the lease was
lost), the command gets SIGTERM and, 10 s later, SIGKILL.

The release reports how the proxy did: success when the command exits with
status 0, failure (reason "COMMAND exited with status N") otherwise, so a
pool with a cooldown rests proxies that keep failing. --no-outcome reports
nothing, for commands whose status says nothing about the proxy.

Exits 3 without running the command when no eligible proxy is free, 127 when
the command cannot be found.`,
		Example: `  pharox run --pool scrapers --country AR -- curl -s https://ifconfig.me
  pharox run --pool scrapers --duration 120 -- ./crawl.sh --depth 2`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("no COMMAND given: pharox run --pool POOL -- COMMAND [ARGS...]")
			}
			req, err := f.request()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			// Signals reach the child; the first also cancels cmd.Context()
			// in main, which must not cut the lease short.
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)

			status := 0
			ran := false
			err = c.WithLease(cmd.Context(), req, func(ctx context.Context, lease model.Lease, proxy model.Proxy) error {
				ran = true
				if verbose {
					fmt.Fprintf(a.stderr, "pharox: lease %s on %s until %s (renewed every %s)\n", lease.ID, redactProxy(proxy.URL),
						fmtTime(lease.ExpiresAt), (lease.ExpiresAt.Sub(lease.AcquiredAt) / 2).Round(time.Millisecond))
				}
				var rerr error
				status, rerr = a.runChild(ctx, cmd.Context(), sigs, args, lease, proxy)
				if rerr != nil {
					return model.NotProxyFault(rerr) // it never ran: the proxy is not to blame
				}
				var res error
				if status != 0 {
					res = childExit{cmd: args[0], status: status}
				}
				if noOutcome {
					return model.NotProxyFault(cmp.Or(res, error(childExit{cmd: args[0]})))
				}
				return res // nil: success, else a failure with the status as reason
			})
			if err != nil && !ran {
				return err // no lease: nothing was run
			}
			err = withoutChildExit(err)
			if err != nil {
				// The child ran; its status wins, but say what went wrong.
				fmt.Fprintf(a.stderr, "pharox: %v\n", err)
				if status == 0 {
					status = exitError
				}
			}
			if verbose {
				fmt.Fprintf(a.stderr, "pharox: released; %s exited with status %d\n", args[0], status)
			}
			if status != 0 {
				return exitStatus{code: status}
			}
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "say on stderr which lease and proxy the command runs with")
	cmd.Flags().BoolVar(&noOutcome, "no-outcome", false, "release without reporting success or failure")
	// Everything after COMMAND belongs to COMMAND, even without "--".
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// childExit is how the command ended, reported as the release's outcome;
// the command's status is passed on, so it is not an error of pharox's.
type childExit struct {
	cmd    string
	status int
}

func (e childExit) Error() string { return fmt.Sprintf("%s exited with status %d", e.cmd, e.status) }

// withoutChildExit drops the childExit parts of err, keeping what really
// went wrong (a renewal or the release).
func withoutChildExit(err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var kept []error
	for _, e := range errs {
		var ce childExit
		if !errors.As(e, &ce) {
			kept = append(kept, e)
		}
	}
	return errors.Join(kept...)
}

// runChild runs the command until it exits. leaseCtx ends when the lease
// could not be renewed (or when parent ends, which only a signal does and
// which is forwarded rather than acted on).
func (a *app) runChild(leaseCtx, parent context.Context, sigs <-chan os.Signal, args []string, lease model.Lease, proxy model.Proxy) (int, error) {
	child := exec.Command(args[0], args[1:]...)
	child.Stdin, child.Stdout, child.Stderr = a.stdin, a.stdout, a.stderr
	child.Env = childEnv(os.Environ(), lease, proxy)
	if err := child.Start(); err != nil {
		switch {
		case errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist):
			return 127, fmt.Errorf("run %s: %w", args[0], err)
		default:
			return 126, fmt.Errorf("run %s: %w", args[0], err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	lost := leaseCtx.Done()
	var kill <-chan time.Time
	for {
		select {
		case err := <-done:
			return exitCodeOf(child, err), nil
		case sig := <-sigs:
			_ = child.Process.Signal(sig)
		case <-lost:
			lost = nil
			if parent.Err() != nil {
				continue // a signal, forwarded above
			}
			fmt.Fprintf(a.stderr, "pharox: %v; stopping %s\n", context.Cause(leaseCtx), args[0])
			_ = child.Process.Signal(syscall.SIGTERM)
			kill = time.After(10 * time.Second)
		case <-kill:
			_ = child.Process.Kill()
		}
	}
}

// childEnv is env without any proxy variables, plus the lease's.
func childEnv(env []string, lease model.Lease, proxy model.Proxy) []string {
	drop := map[string]bool{"PHAROX_LEASE_ID": true, "PHAROX_PROXY_ID": true, "PHAROX_PROXY_URL": true}
	for _, k := range proxyEnv {
		drop[k] = true
	}
	out := make([]string, 0, len(env)+len(proxyEnv)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			out = append(out, kv)
		}
	}
	for _, k := range proxyEnv {
		out = append(out, k+"="+proxy.URL)
	}
	return append(out, "PHAROX_LEASE_ID="+lease.ID, "PHAROX_PROXY_ID="+proxy.ID, "PHAROX_PROXY_URL="+proxy.URL)
}

// exitCodeOf is the shell's view of how the child ended.
func exitCodeOf(child *exec.Cmd, err error) int {
	st := child.ProcessState
	if st == nil {
		if err != nil {
			return exitError
		}
		return 0
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// redactProxy hides a proxy URL's password.
func redactProxy(s string) string { return redactURL(s) }
