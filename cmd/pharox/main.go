// Command pharox is the command line of the pharox NATS service: lease a
// proxy, run a command through one, administer pools, proxies and
// consumers, import proxies in bulk and tail lifecycle events.
//
// Exit codes: 0 ok, 1 error, 2 usage, 3 no proxy available; `pharox run`
// exits with its command's status.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT/SIGTERM cancels the command's context (a tail stops,
	// a wait ends); `pharox run` forwards them to its child instead.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
