#!/bin/sh
# bench-compare.sh BEFORE_BIN AFTER_BIN BENCH_BIN [ROUNDS] [WORKLOAD] [DURATION]
# Alternates two server builds under the same `vellum bench` client, a fresh
# data directory each run, and prints each run's table. Used for the
# before/after figures in BENCHMARKS.md. Listens on 127.0.0.1 only.
set -eu
before=$1 after=$2 bench=$3 rounds=${4:-3} workload=${5:-all} duration=${6:-6s}
port=7191
for round in $(seq 1 "$rounds"); do
	for which in before after; do
		bin=$before; [ "$which" = after ] && bin=$after
		d=$(mktemp -d)
		"$bin" serve --data "$d/d" --listen 127.0.0.1:$port --log-level error >/dev/null 2>&1 &
		pid=$!
		sleep 2
		echo "== round $round: $which"
		VELLUM_URL=http://127.0.0.1:$port VELLUM_KEY=$(cat "$d/d/admin.key") "$bench" bench --workload "$workload" --duration "$duration" 2>/dev/null | grep -E '^ *(workload|single|concurrent|batch) '
		kill "$pid"; wait "$pid" 2>/dev/null || true
		rm -rf "$d"
	done
done
