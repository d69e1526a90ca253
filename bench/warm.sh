#!/usr/bin/env bash
# Warming and stale serving, as in BENCHMARKS.md "Warming" and "Stale
# serving during a database outage". Builds the release host; the bench
# database (100,000 agents) is created and seeded as by bench/run.sh.
#
#   bash bench/warm.sh [ROUNDS]
#
# BENCH_NO_BUILD=1 measures the release host as built.
# 1. Hit rate in the first seconds after a cold start: the Zipf browse
#    workload (bench/zipf.lua, 2,000 pages, 32 connections) is run for
#    BENCH_FIRST_SECONDS (5) against a host that just started with an empty
#    memory tier, with --cache-warm 0, 64 (the default) and 256, the
#    variants interleaved in each round; the answers are counted by their
#    X-Cache header. Before the rounds, one host serves the workload for
#    20 s and flushes its counts, so that the database knows what is asked.
#    Also: the time from start to the first answer (start waits for warming
#    at most --cache-warm-wait-ms, 2 s).
# 2. A database outage: a host on the Redis tier, its database behind
#    bench/cutproxy.py, with --cache-max-ttl 2; the workload fills the
#    cache for 5 s, the proxy is cut, and 3 s later (every entry past its
#    TTL) the workload runs for 10 s: throughput, p50 and p99, and the
#    share answered 200; with stale serving off (--cache-stale-grace 0
#    --cache-revalidate-window 0) against on (the defaults).
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=bench/common.sh
. bench/common.sh
ROUNDS=${1:-3}
FIRST=${BENCH_FIRST_SECONDS:-5}
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
PORT=18090
BASE="http://127.0.0.1:$PORT"
PROXY_PORT=18432
work=$(mktemp -d)
mkdir -p bench/results
report="bench/results/warm-$(date -u +%Y%m%dT%H%M%SZ).md"
host_pid=""
proxy_pid=""
cleanup() {
  [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" | tee -a "$report"; }
log() { printf '\n# %s\n' "$*" >&2; }

if ! psql "$PG_BASE/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  psql "$PG_BASE/postgres" -qc "CREATE DATABASE $DB_NAME" >&2
fi

now_ms() { date +%s%3N; }
# start_host FLAGS...: the host on the bench database (through PG_BASE) in
# the background; sets `ready` to the milliseconds from start to its first
# answer. Not in a subshell: host_pid must stay set.
ready=0
start_host() {
  stop_host
  if curl -fs "$BASE/healthz" >/dev/null 2>&1; then
    echo "something else answers on $BASE; stop it first" >&2; exit 1
  fi
  local t0; t0=$(now_ms)
  bench_serve "" "$HOST" "$PORT" "$work/state" "$work/host.log" "$@"
  host_pid=$!
  # Long enough for the first start, which seeds the bench database.
  wait_up "$BASE/healthz" 60000 0.01 "$host_pid" || { cat "$work/host.log" >&2; exit 1; }
  ready=$(($(now_ms) - t0))
}
stop_host() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; wait "$host_pid" 2>/dev/null || true; host_pid=""; fi
}
zipf() { # zipf SECONDS [WRK FLAGS...]: the workload; wrk's report
  local secs=$1; shift
  COUNT_X_CACHE=1 ZIPF_PAGES=2000 wrk_out 32 "$secs" "$BASE/" -s bench/zipf.lua "$@"
}
x_cache() { awk -v k="$1" '/^x-cache/ {for (i = 2; i <= NF; i++) {split($i, a, "="); if (a[1] == k) print a[2]}}'; }
declare -A results
record() { results[$1]+="$2"$'\n'; }
# shellcheck disable=SC2119
med() { echo "${results[$1]}" | awk -v f="$2" 'NF {print $f}' | median; }

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building the release host"
  cargo build --release -p host >&2
fi
say "# Warming and stale serving, $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "Machine: $(nproc) cores, $(uname -r); wrk -t1 -c32 on loopback; medians of $ROUNDS rounds, the variants interleaved."
say ""

# --- 1. warming --------------------------------------------------------------
log "teaching the database what is asked"
start_host
zipf 20 >/dev/null
sleep 11 # a flush of the counts (every 10 s)
stop_host
variants="0 64 256"
for round in $(seq "$ROUNDS"); do
  for n in $variants; do
    log "round $round: --cache-warm $n"
    start_host --cache-warm "$n"
    out=$(zipf "$FIRST")
    hit=$(x_cache HIT <<<"$out"); miss=$(x_cache MISS <<<"$out")
    record "warm-$n" "$ready $(awk -v h="$hit" -v m="$miss" 'BEGIN {printf "%.1f", 100*h/(h+m)}') $(wrk_rps <<<"$out")"
  done
done
stop_host
say "## Hit rate in the first ${FIRST} s after a cold start (memory tier)"
say ""
say "| --cache-warm | start to first answer, ms | hit rate | rps |"
say "|---|---|---|---|"
for n in $variants; do
  say "| $n | $(med "warm-$n" 1) | $(med "warm-$n" 2)% | $(med "warm-$n" 3) |"
done
say ""

# --- 2. a database outage -----------------------------------------------------
log "a database outage"
python3 bench/cutproxy.py "127.0.0.1:$PROXY_PORT" "${PG_BASE##*@}" &
proxy_pid=$!
sleep 0.5
direct=$PG_BASE
PG_BASE="postgres://postgres@127.0.0.1:$PROXY_PORT"
for round in $(seq "$ROUNDS"); do
  for variant in off on; do
    flags=(--cache-warm 0 --cache-max-ttl 2 --redis-url "$REDIS" --redis-prefix "bench-warm:$(date +%s%N):")
    [ "$variant" = off ] && flags+=(--cache-stale-grace 0 --cache-revalidate-window 0)
    log "round $round: stale serving $variant"
    start_host "${flags[@]}"
    zipf 5 >/dev/null
    kill -USR1 "$proxy_pid"
    sleep 3
    out=$(zipf 10 --latency)
    kill -USR2 "$proxy_pid"
    total=$(wrk_requests <<<"$out")
    stale=$(x_cache STALE <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
    record "outage-$variant" "$(wrk_rps <<<"$out") $(wrk_ms 50% <<<"$out") $(wrk_ms 99% <<<"$out") $(awk -v t="$total" -v n="$non2xx" -v s="$stale" 'BEGIN {printf "%.1f %.1f", 100*(t-n)/t, 100*s/t}')"
  done
done
stop_host
PG_BASE=$direct
say "## During a database outage (Redis tier, --cache-max-ttl 2)"
say ""
say "| stale serving | rps | p50 ms | p99 ms | answered 2xx | of which STALE |"
say "|---|---|---|---|---|---|"
for variant in off on; do
  say "| $variant | $(med "outage-$variant" 1) | $(med "outage-$variant" 2) | $(med "outage-$variant" 3) | $(med "outage-$variant" 4)% | $(med "outage-$variant" 5)% |"
done
say ""
echo "Report: $report" >&2
