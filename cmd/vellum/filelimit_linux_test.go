package main

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// fileLimitEnv, in a child server process, caps the size of every file the
// process writes (RLIMIT_FSIZE): a write past it fails with EFBIG, as a
// full disk fails with ENOSPC. SIGUSR1 lifts the cap: space returns.
const fileLimitEnv = "VELLUM_TEST_FSIZE"

func applyTestFileLimit() {
	s := os.Getenv(fileLimitEnv)
	if s == "" {
		return
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		panic(fileLimitEnv + ": " + err.Error())
	}
	signal.Ignore(syscall.SIGXFSZ) // fail the write, do not kill the process
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: ^uint64(0)}); err != nil {
		panic(err)
	}
	lift := make(chan os.Signal, 1)
	signal.Notify(lift, syscall.SIGUSR1)
	go func() {
		<-lift
		syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: ^uint64(0), Max: ^uint64(0)})
	}()
}
