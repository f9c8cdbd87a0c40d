package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuUse is CPU time spent by the NATS server process and by this process
// (clients and in-process workers). Dividing it by the operations of a run
// shows where a pair's cost goes next to a baseline operation's, which is
// what bounds the ratios.
type cpuUse struct {
	server, bench time.Duration
	known         bool // the server is our child process, so its CPU is readable
}

func (e *env) cpu() cpuUse {
	u := cpuUse{bench: selfCPU()}
	if e.proc != nil {
		if d, err := processCPU(e.proc.cmd.Process.Pid); err == nil {
			u.server, u.known = d, true
		}
	}
	return u
}

func (u cpuUse) sub(v cpuUse) cpuUse {
	return cpuUse{server: u.server - v.server, bench: u.bench - v.bench, known: u.known && v.known}
}

// total is the server's and the bench's CPU in µs.
func (u cpuUse) total() float64 { return float64((u.server + u.bench).Microseconds()) }

// perOp renders the CPU microseconds per operation, server+bench.
func (u cpuUse) perOp(ops int64) string {
	if ops <= 0 {
		return ""
	}
	b := float64(u.bench.Microseconds()) / float64(ops)
	if !u.known {
		return fmt.Sprintf("?+%.0f", b)
	}
	return fmt.Sprintf("%.0f+%.0f", float64(u.server.Microseconds())/float64(ops), b)
}

// selfCPU is this process's user+system time so far (0 if unreadable).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processCPU reads a process's user+system time from /proc (Linux).
func processCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond, nil
}
