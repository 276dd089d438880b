#!/bin/sh
# memory-bench.sh VELLUM_BIN DATA_DIR [COUNT] [DURATION] [PORT]
#
# Server memory through the batch benchmark on a large log (issue 6: "under
# 256 MiB RSS through the batch benchmark on a 1,000,000-entry log").
#
# 1. Unless log `seed` in DATA_DIR already holds COUNT entries (default
#    1,000,000), starts a server on DATA_DIR (created if missing) and runs
#    `vellum bench seed --log seed --count COUNT`, sampling the server's
#    memory, then stops it.
# 2. Starts a fresh server process on DATA_DIR and runs
#    `vellum bench --workload batch --log seed --duration DURATION` (default
#    60s) against it: the appends go to the seeded log. While it runs, the
#    server's VmRSS is sampled every 0.2 s from /proc/PID/status; at the end
#    its VmHWM (the kernel's peak RSS of the process) is printed with the
#    bench table and the load average.
#
# BENCH_ARGS adds flags to `vellum bench` (say "--producers 16"). The
# server inherits the environment: VELLUM_HEAPPROFILE=FILE makes it write a
# Go heap profile when it is stopped, at the end of the benchmark.
#
# The server listens on 127.0.0.1:PORT (default 7291) only and is stopped
# (SIGTERM, then waited for) on exit, even on error. Linux only (/proc).
set -eu
bin=$(realpath "$1") data=$2 count=${3:-1000000} duration=${4:-60s} port=${5:-7291}
url=http://127.0.0.1:$port
pid=
stop() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
trap stop EXIT INT TERM

start() {
	"$bin" serve --data "$data" --listen 127.0.0.1:"$port" --log-level warn 2>>"$data.serve.log" &
	pid=$!
	i=0
	until curl -fs "$url/healthz" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then
			echo "server did not come up (see $data.serve.log)" >&2
			exit 1
		fi
		sleep 0.1
	done
}

# sample FILE: writes the peak VmRSS (kB) seen into FILE until the server exits
# or FILE.stop exists.
sample() {
	peak=0
	while [ ! -e "$1.stop" ] && [ -r /proc/$pid/status ]; do
		rss=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
		[ -n "$rss" ] && [ "$rss" -gt "$peak" ] && peak=$rss && echo "$peak" >"$1"
		sleep 0.2
	done
}

report() { # label
	hwm=$(awk '/^VmHWM:/ {print $2}' /proc/$pid/status)
	rss=$(awk '/^VmRSS:/ {print $2}' /proc/$pid/status)
	echo "$1: server VmHWM $((hwm / 1024)) MiB ($hwm kB), peak sampled VmRSS $(($(cat "$tmp/peak") / 1024)) MiB, VmRSS now $((rss / 1024)) MiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

mkdir -p "$(dirname "$data")"
tmp=$(mktemp -d)
trap 'stop; rm -rf "$tmp"' EXIT INT TERM

start
export VELLUM_URL=$url VELLUM_KEY="$(cat "$data/admin.key")"
have=$("$bin" logs list 2>/dev/null | awk '$1 == "seed" {print $2}' || true)
have=${have:-0}
if [ "$have" -lt "$count" ]; then
	echo "seeding log seed: $have → $count entries"
	echo 0 >"$tmp/peak"
	sample "$tmp/peak" &
	spid=$!
	/usr/bin/time -f "seed: %e s wall" "$bin" bench seed --log seed --count $((count - have)) --batch 1000 --producers 4
	touch "$tmp/peak.stop"
	wait "$spid"
	report "during seeding"
	rm -f "$tmp/peak.stop"
fi
stop

# A fresh server process on the seeded directory: its peak is the batch
# benchmark's (plus start-up on the large log).
start
echo "server pid $pid on $data; start-up VmRSS $(awk '/^VmRSS:/ {print $2}' /proc/$pid/status) kB"
echo 0 >"$tmp/peak"
sample "$tmp/peak" &
spid=$!
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
"$bin" bench --workload batch --log seed --duration "$duration" ${BENCH_ARGS:-}
touch "$tmp/peak.stop"
wait "$spid"
report "batch benchmark on log seed"
"$bin" logs list 2>/dev/null | awk '$1 == "seed"' || true
stop
