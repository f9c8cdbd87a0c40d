package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// serveNATSArg makes the bench binary run as a NATS server child process, so
// that the server's CPU is not counted against the bench's own process and
// a worker's memory can be measured alone.
const serveNATSArg = "__serve-nats"

// serverProfilePortEnv serves the child server's pprof on that loopback
// port, to profile the server side of a scenario while it runs, e.g.
//
//	PHAROX_BENCH_SERVER_PROFILE_PORT=6061 go run ./cmd/bench --scenarios 5 &
//	curl -o /tmp/srv.prof 'http://127.0.0.1:6061/debug/pprof/profile?seconds=20'
const serverProfilePortEnv = "PHAROX_BENCH_SERVER_PROFILE_PORT"

// natsProcess is a NATS server with JetStream in a child process.
type natsProcess struct {
	cmd *exec.Cmd
	url string
	dir string
}

func startNATSProcess() (*natsProcess, error) {
	dir, err := os.MkdirTemp("", "pharox-bench-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0], serveNATSArg, dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start NATS server process: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("NATS server process did not report its URL: %w", err)
	}
	return &natsProcess{cmd: cmd, url: strings.TrimSpace(line), dir: dir}, nil
}

func (p *natsProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(p.dir)
}

// serveNATS is the child: it prints its client URL and serves until stdin
// closes or it is interrupted.
func serveNATS(dir string) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, MaxPayload: 8 << 20}
	if port := os.Getenv(serverProfilePortEnv); port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			fmt.Fprintf(os.Stderr, "nats server: %s must be a TCP port, got %q\n", serverProfilePortEnv, port)
			os.Exit(1)
		}
		opts.ProfPort = p
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats server:", err)
		os.Exit(1)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats server not ready")
		os.Exit(1)
	}
	fmt.Println(s.ClientURL())
	s.WaitForShutdown()
}
