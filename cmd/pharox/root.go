package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pharox/pharox-nats/client"
	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/natsconn"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitNoProxy = 3
)

// usageError is a command line that cannot be run as given (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitStatus ends the command with a given code; with a nil err nothing is
// printed (pharox run passing its child's status on).
type exitStatus struct {
	code int
	err  error
}

func (e exitStatus) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e exitStatus) Unwrap() error { return e.err }

// app is one invocation: where it writes, how it connects, global flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	nats    natsconn.Config
	prefix  string
	timeout time.Duration
	jsonOut bool

	nc       *nats.Conn
	c        *client.Client
	endTrace func() // trace.go

	// cancel ends the command when the server refuses one of its
	// operations (a permissions violation arrives on the connection, not
	// as the request's answer); denied says why.
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	denied error
}

// execute runs the command line args and returns the process exit code.
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	root, a := newRootCmd(stdin, stdout, stderr, getenv)
	root.SetArgs(args)
	ctx, a.cancel = context.WithCancelCause(ctx)
	defer a.cancel(nil)
	cmd, err := root.ExecuteContextC(ctx)
	if a.endTrace != nil {
		a.endTrace()
	}
	a.close()
	return a.exitCode(cmd, err)
}

// newRootCmd builds the command tree writing to stdout and stderr; getenv
// supplies the PHAROX_* defaults (os.Getenv in main, a map in tests).
func newRootCmd(stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) (*cobra.Command, *app) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := &cobra.Command{
		Use:   "pharox",
		Short: "Lease proxies from pharox pools over NATS, and administer them",
		Long: `pharox talks to the pharox workers over NATS: lease a proxy, run a command
through one, administer pools, proxies and consumers, import proxies in bulk
and tail lifecycle events.

Exit codes: 0 ok, 1 error, 2 usage, 3 no proxy available; "pharox run" exits
with its command's status.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRun,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	timeout := client.DefaultTimeout
	var timeoutErr error
	if v := getenv("PHAROX_TIMEOUT"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			timeout = d
		} else {
			timeoutErr = usageErrorf("PHAROX_TIMEOUT=%q is not a positive duration", v)
		}
	}
	pf := root.PersistentFlags()
	a.nats.AddFlags(pf, natsconn.WithContextFlag(), natsconn.WithEnvDefaults(getenv),
		natsconn.WithURLUsage("NATS server URL, comma-separated for a cluster (default "+nats.DefaultURL+", or the nats CLI's selected context)"))
	pf.StringVar(&a.prefix, "subject-prefix", envOr(getenv, "PHAROX_SUBJECT_PREFIX", "pharox"), "subject prefix the workers serve (env PHAROX_SUBJECT_PREFIX)")
	pf.DurationVar(&a.timeout, "timeout", timeout, "how long each request waits for a reply (env PHAROX_TIMEOUT)")
	pf.BoolVar(&a.jsonOut, "json", false, "print JSON (the contract's replies) instead of tables")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if timeoutErr != nil && !cmd.Flags().Changed("timeout") {
			return timeoutErr
		}
		if a.timeout <= 0 {
			return usageErrorf("--timeout must be positive, got %s", a.timeout)
		}
		if a.prefix == "" || strings.ContainsAny(a.prefix, " *>\t") {
			return usageErrorf("--subject-prefix %q is not a valid subject token", a.prefix)
		}
		a.nats.LoadEnv(getenv)
		if err := a.nats.Check(); err != nil {
			return usageError{err}
		}
		end, err := a.traceCommand(cmd) // trace.go
		a.endTrace = end
		return err
	}

	root.AddCommand(
		a.acquireCmd(), a.releaseCmd(), a.renewCmd(), a.leaseCmd(), a.statsCmd(), a.cleanupCmd(),
		a.runCmd(), a.poolsCmd(), a.proxiesCmd(), a.consumersCmd(), a.healthCmd(), a.eventsCmd(), a.gatewayCmd(), a.keygenCmd(),
		a.topCmd(),
	)
	return root, a
}

// setIfGiven sets *dst to v when the flag name was given on the command
// line: what no flag names is not sent (or keeps its current value).
func setIfGiven[T any](fs *pflag.FlagSet, name string, dst *T, v T) {
	if fs.Changed(name) {
		*dst = v
	}
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// groupRun is the RunE of commands that only hold subcommands: bare, they
// print their help; with an argument that is no subcommand, a usage error.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return usageError{errors.New(msg)}
	}
	return cmd.Help()
}

// group is a command that only holds subcommands (see groupRun).
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs, RunE: groupRun}
	cmd.AddCommand(subs...)
	return cmd
}

// exactArgs is cobra.ExactArgs as a usage error naming what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s, got %d argument(s)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// client connects on first use.
func (a *app) client() (*client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	settings, err := a.nats.Resolve()
	if err != nil {
		return nil, err
	}
	nc, err := settings.Connect(nats.Name("pharox-cli"), nats.Timeout(a.timeout), nats.ErrorHandler(a.asyncError))
	if err != nil {
		return nil, err
	}
	a.nc = nc
	a.c = client.New(nc, client.WithPrefix(a.prefix), client.WithTimeout(a.timeout))
	return a.c, nil
}

// send is the round trip most commands make once their command line is
// checked: connect on first use, make one call, print its reply with show.
// call takes the client first so that a method expression such as
// (*client.Client).ListPools is one.
func send[T any](a *app, cmd *cobra.Command, call func(*client.Client, context.Context) (T, error), show func(T) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	reply, err := call(c, cmd.Context())
	if err != nil {
		return err
	}
	return show(reply)
}

// bind is the call of send for a client method that takes a request, as in
// bind((*client.Client).Lease, id).
func bind[R, T any](method func(*client.Client, context.Context, R) (T, error), req R) func(*client.Client, context.Context) (T, error) {
	return func(c *client.Client, ctx context.Context) (T, error) { return method(c, ctx, req) }
}

// single is the show of one item created or read: as JSON the item itself,
// else a table of one row.
func single[T any](a *app, table func(...T) error) func(T) error {
	return func(v T) error {
		if a.jsonOut {
			return a.printJSON(v)
		}
		return table(v)
	}
}

// listed is the show of a list reply: as JSON, wrap(items), an empty list
// rather than null when there are none; else the table.
func listed[T any](a *app, wrap func([]T) any, table func(...T) error) func([]T) error {
	return func(items []T) error {
		if a.jsonOut {
			if items == nil {
				items = []T{}
			}
			return a.printJSON(wrap(items))
		}
		return table(items...)
	}
}

// showCmd is a command that reads one thing by its id or name, its one
// argument, and prints it.
func showCmd[T any](a *app, use, short, what string, get func(*client.Client, context.Context, string) (T, error), show func(T) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, what),
		RunE: func(cmd *cobra.Command, args []string) error {
			return send(a, cmd, bind(get, args[0]), show)
		},
	}
}

// listCmd is a "list" command, with no argument, that prints every item of
// a kind: as JSON, wrap(items), else the table.
func listCmd[T any](a *app, short string, list func(*client.Client, context.Context) ([]T, error), wrap func([]T) any, table func(...T) error) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return send(a, cmd, list, listed(a, wrap, table))
		},
	}
}

func (a *app) close() {
	if a.nc != nil {
		a.nc.Close()
		a.nc = nil
	}
}

// redactURL hides passwords and tokens of URLs (NATS servers, proxies) in
// messages.
func redactURL(s string) string { return natsconn.Redact(s) }

// asyncError is the connection's error handler: a permissions violation
// ends the command with the server's reason, instead of letting its request
// wait for a reply that never comes.
func (a *app) asyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	denied := natsconn.Denied(err)
	if denied == nil {
		return
	}
	a.mu.Lock()
	if a.denied == nil {
		a.denied = denied
	}
	a.mu.Unlock()
	if a.cancel != nil {
		a.cancel(denied)
	}
}

func (a *app) deniedErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.denied
}

// exitCode prints err (if any) and maps it to the exit code.
func (a *app) exitCode(cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	var st exitStatus
	if errors.As(err, &st) && st.err == nil && a.deniedErr() == nil {
		return st.code
	}
	if denied := a.deniedErr(); denied != nil {
		// The command failed because its context ended; the reason is the
		// server's refusal.
		err = denied
	}
	fmt.Fprintf(a.stderr, "pharox: %v\n", err)
	var ue usageError
	switch {
	case errors.As(err, &ue) || isCobraUsage(err):
		path := "pharox"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", path)
		return exitUsage
	case errors.As(err, &st):
		return st.code
	case errors.Is(err, model.ErrNoProxyAvailable):
		return exitNoProxy
	}
	return exitError
}

// isCobraUsage recognises the few usage errors cobra words itself.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "required flag", "invalid argument", "flag needs an argument"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
}

// kv prints key/value rows as two aligned columns.
func (a *app) kv(rows ...[2]string) error {
	w := a.table()
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\n", r[0], r[1])
	}
	return w.Flush()
}

func orDash(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func fmtTimePtr(t *time.Time) string { return dashOr(t, fmtTime) }

// dashOr is *v in format, or "-" for nil.
func dashOr[T any](v *T, format func(T) string) string {
	if v == nil {
		return "-"
	}
	return format(*v)
}

// fmtMs renders milliseconds as a rounded Go duration (1.234ms, 2m0s).
func fmtMs(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}
