package granttest

import (
	"syscall"
	"time"
)

// ProcessCPU is the process's user and system CPU time, for benchmarks
// that report CPU per grant (the embedded broker's included).
func ProcessCPU() time.Duration { return rusage(syscall.RUSAGE_SELF) }

// rusageThread is Linux's RUSAGE_THREAD: the calling thread only.
const rusageThread = 1

// ThreadCPU is the calling thread's user and system CPU time: a benchmark
// client locked to its thread (runtime.LockOSThread) measures its own
// share, so that what remains is the server's.
func ThreadCPU() time.Duration { return rusage(rusageThread) }

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
