#!/bin/sh
# index-cost.sh VELLUM_BIN [ROUNDS] [DURATION] [PORT]
#
# What the search index costs end to end (issue 4: "index maintenance costs
# at most 20% of append throughput"). Each round runs
# `vellum bench --workload WORKLOAD --duration DURATION` (default 30s) twice,
# each time against a fresh server on a fresh data directory: once with the
# indexer (the normal server) and once with VELLUM_SQLITE_NO_INDEXER=1 (the
# commits still carry their index documents; nothing writes index.db). The
# order alternates between rounds. ROUNDS defaults to 6. WORKLOAD (an
# environment variable) is batch (default: 4 producers × 1,000-event
# requests) or concurrent (64 producers, one event per request).
#
# Prints each run's bench line, then the medians of the two sets and the
# cost, 1 - median(on) / median(off). Server, client and indexer share the
# machine's cores: run it on a quiet machine (the load average is printed).
#
# The servers listen on 127.0.0.1:PORT (default 7293) only and are stopped
# (SIGTERM, then waited for) on exit, even on error.
set -eu
bin=$(realpath "$1") rounds=${2:-6} duration=${3:-30s} port=${4:-7293} workload=${WORKLOAD:-batch}
url=http://127.0.0.1:$port
pid=
tmp=$(mktemp -d)
stop() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
trap 'stop; rm -rf "$tmp"' EXIT INT TERM

run() { # label noindexer(0|1)
	rm -rf "$tmp/d"
	VELLUM_SQLITE_NO_INDEXER=$2 "$bin" serve --data "$tmp/d" --listen 127.0.0.1:"$port" --log-level warn 2>>"$tmp/serve.log" &
	pid=$!
	i=0
	until curl -fs "$url/healthz" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then
			echo "server did not come up:" >&2
			cat "$tmp/serve.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	line=$(VELLUM_URL=$url VELLUM_KEY="$(cat "$tmp/d/admin.key")" "$bin" bench --workload "$workload" --duration "$duration" --json 2>>"$tmp/bench.log")
	stop
	eps=$(echo "$line" | tr ',{}' '\n\n\n' | awk -F: '/"events_per_sec"/ {printf "%d", $2; exit}')
	if [ -z "$eps" ]; then
		echo "no events_per_sec in the bench output: $line" >&2
		exit 1
	fi
	echo "$1 $eps" >>"$tmp/results"
	echo "indexer $1: $eps events/s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

r=1
while [ "$r" -le "$rounds" ]; do
	if [ $((r % 2)) -eq 1 ]; then
		run on 0
		run off 1
	else
		run off 1
		run on 0
	fi
	r=$((r + 1))
done

median() { # label
	awk -v l="$1" '$1 == l {print $2}' "$tmp/results" | sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
on=$(median on) off=$(median off)
echo "$workload, median events/s: indexer on $on, off $off; index cost $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.1f %%\n", 100 * (1 - a / b)}')"
