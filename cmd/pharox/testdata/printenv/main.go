// Command printenv is a test helper of pharox run: it prints the proxy and
// PHAROX_* variables it was given (KEY=VALUE, sorted), then "ready", sleeps,
// and exits with the status asked for. With -trap it prints the signal it
// gets ("got terminated") and exits 100+signal.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	sleep := flag.Duration("sleep", 0, "how long to run")
	exit := flag.Int("exit", 0, "exit status")
	trap := flag.Bool("trap", false, "catch SIGINT/SIGTERM, report it, exit 100+signal")
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	if *trap {
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	}
	var lines []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PHAROX_") || strings.HasSuffix(strings.ToUpper(k), "_PROXY") {
			lines = append(lines, kv)
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Println("ready")
	select {
	case <-time.After(*sleep):
	case s := <-sigs:
		fmt.Printf("got %v\n", s)
		os.Exit(100 + int(s.(syscall.Signal)))
	}
	os.Exit(*exit)
}
