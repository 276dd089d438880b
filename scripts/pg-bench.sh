#!/bin/sh
# pg-bench.sh VELLUM_BIN [NODES] [WORKLOAD] [DURATION] [PRODUCERS]
#
# LOGS=N spreads the producers over N logs (bench --logs N): producer i
# writes to log i mod N through node i mod NODES, so with LOGS=NODES each
# node sequences one log.
#
# READ_LOAD=N adds N readers searching the bench log in a loop during the
# run (newest page, an action prefix, full text: reads on the same database
# as the sequencer, each also recorded in _access).
#
# The core workloads on PostgreSQL, on this machine: starts a throwaway
# PostgreSQL cluster with the durable defaults (fsync on, synchronous
# commit) on a Unix socket in a temporary directory, creates the owner and
# the restricted app role, runs `vellum migrate`, starts NODES vellum nodes
# on the database (127.0.0.1 only), runs `vellum bench` with its producers
# spread over the nodes, and stops and removes everything.
# Used for the issue-5 figures in BENCHMARKS.md. Needs the PostgreSQL server
# binaries (apt-get install postgresql); run as root or as a user that can
# run initdb itself.
set -eu
bin=$(realpath "$1") nodes=${2:-1} workload=${3:-all} duration=${4:-10s} producers=${5:-0}
pgbin=${VELLUM_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
tmp=$(mktemp -d)
chmod 755 "$tmp"
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir "$tmp/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$tmp/pg"
as_pg "$pgbin/initdb" -D "$tmp/pg/data" -U postgres -A trust >/dev/null
as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/server.log" -w \
	-o "-c listen_addresses= -c unix_socket_directories=$tmp/pg -c max_connections=400 -c shared_buffers=512MB" start >/dev/null
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	as_pg "$pgbin/pg_ctl" -D "$tmp/pg/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
psql="$pgbin/psql -q -h $tmp/pg -U postgres -d postgres -v ON_ERROR_STOP=1"
$psql -c "CREATE ROLE vellum_owner LOGIN" -c "CREATE ROLE vellum_app LOGIN" -c "CREATE DATABASE vellum OWNER vellum_owner"
host=$(printf %s "$tmp/pg" | sed 's|/|%2F|g')
owner="postgres://vellum_owner@/vellum?host=$host"
app="postgres://vellum_app@/vellum?host=$host"
"$bin" migrate --postgres "$owner" 2>/dev/null
"$pgbin/psql" -q -h "$tmp/pg" -U vellum_owner -d vellum -v ON_ERROR_STOP=1 <<'SQL'
GRANT USAGE ON SCHEMA public TO "vellum_app";
GRANT SELECT ON vellum_schema_migrations TO "vellum_app";
GRANT SELECT, INSERT ON logs, entries, hashes, checkpoints, event_ids, seqs TO "vellum_app";
GRANT UPDATE (id) ON logs TO "vellum_app";
GRANT SELECT, INSERT, TRUNCATE ON search, search_targets, search_text TO "vellum_app";
GRANT SELECT, INSERT ON sequencer_leases TO "vellum_app";
SQL
urls=""
for i in $(seq 0 $((nodes - 1))); do
	d="$tmp/node$i"
	mkdir -p "$d"
	if [ "$i" -gt 0 ]; then cp "$tmp/node0/config.json" "$tmp/node0/server.key" "$d/"; fi
	port=$((7481 + i))
	VELLUM_CPUPROFILE=${PROFILE_DIR:+$PROFILE_DIR/node$i.prof} "$bin" serve --data "$d" --postgres "$app" --listen 127.0.0.1:$port --log-level error >"$d/serve.log" 2>&1 &
	pids="$pids $!"
	for _ in $(seq 1 100); do
		if grep -q "serving on" "$d/serve.log" 2>/dev/null; then break; fi
		sleep 0.1
	done
	urls="$urls${urls:+,}http://127.0.0.1:$port"
done
echo "== PostgreSQL ($("$pgbin/postgres" --version)), $nodes node(s): $urls, ${READ_LOAD:-0} readers"
export VELLUM_URL=http://127.0.0.1:7481 VELLUM_KEY="$(cat "$tmp/node0/admin.key")"
"$bin" logs create bench >/dev/null 2>&1 || true
for r in $(seq 1 "${READ_LOAD:-0}"); do
	(while [ ! -e "$tmp/stop" ]; do
		"$bin" query --log bench --json --limit 100 >/dev/null 2>&1 && echo ok >>"$tmp/reads.log"
		"$bin" query --log bench --action 'user.*' --since 1h --json --limit 100 >/dev/null 2>&1 && echo ok >>"$tmp/reads.log"
		"$bin" query --log bench --q 'alpha' --json --limit 100 >/dev/null 2>&1 && echo ok >>"$tmp/reads.log"
	done) &
	pids="$pids $!"
done
"$bin" bench --urls "$urls" --logs "${LOGS:-1}" --workload "$workload" --duration "$duration" --producers "$producers" 2>/dev/null
touch "$tmp/stop"
if [ "${READ_LOAD:-0}" -gt 0 ]; then echo "reads: $(wc -l <"$tmp/reads.log") searches answered during the run"; fi
