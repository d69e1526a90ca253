#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md: prepares 100,000 agents on PostgreSQL,
# starts the release host (with the native baseline mounted under /native)
# and drives it with wrk on loopback. Prints a Markdown report and keeps it
# in bench/results/. Run from anywhere:
#
#   bash bench/run.sh
#
# Settings (environment): BENCH_DB_URL (a PostgreSQL server; its database
# `marketplace_bench` is created and seeded once), REDIS_URL, BENCH_SECONDS
# per wrk run (6), BENCH_ROUNDS (3: each figure is the median of the
# rounds, the paths interleaved within a round), BENCH_CONCURRENCY ("8 32 64").
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh

REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
SECONDS_PER_RUN="${BENCH_SECONDS:-6}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONCURRENCY="${BENCH_CONCURRENCY:-8 32 64}"
PORT=18080
BASE="http://127.0.0.1:$PORT"
work=$(mktemp -d)
mkdir -p bench/results
report="bench/results/$(date -u +%Y%m%dT%H%M%SZ).md"
host_pid=""

cleanup() {
  [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null && wait "$host_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" | tee -a "$report"; }
log() { printf '\n# %s\n' "$*" >&2; }

# --- set-up -----------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  log "installing wrk (Debian package)"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
log "building the components and the release host"
cargo xtask components >&2
cargo build --release -p host >&2

if ! psql "$PG_BASE/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
  psql "$PG_BASE/postgres" -qc "CREATE DATABASE $DB_NAME" >&2
fi

# start_host [EXTRA FLAGS...]: the host on the bench database, in the
# background; waits until it answers.
start_host() {
  stop_host
  bench_serve "" "$HOST" "$PORT" "$work/state" "$work/host.log" "$@"
  host_pid=$!
  local up=0
  wait_up "$BASE/api/marketplace/categories" 600 0.2 "$host_pid" || up=$?
  case $up in
    1) cat "$work/host.log" >&2; exit 1 ;;
    2) echo "the host did not come up" >&2; exit 1 ;;
  esac
}
stop_host() {
  if [ -n "$host_pid" ]; then kill "$host_pid" 2>/dev/null || true; wait "$host_pid" 2>/dev/null || true; host_pid=""; fi
}
redis_flags() { echo "--redis-url $REDIS --redis-prefix bench:$(date +%s%N):"; }

# wrk_run CONNECTIONS PATH [SCRIPT]: prints "rps p50_ms p99_ms".
wrk_run() {
  local c=$1 path=$2 script=${3:-}
  local out
  if [ -n "$script" ]; then
    out=$(wrk_out "$c" "$SECONDS_PER_RUN" "$BASE$path" --latency -s "$script")
  else
    out=$(wrk_out "$c" "$SECONDS_PER_RUN" "$BASE$path" --latency)
  fi
  if echo "$out" | grep -q "Non-2xx"; then
    echo "wrk saw errors on $path:" >&2; echo "$out" >&2; exit 1
  fi
  echo "$(wrk_rps <<<"$out") $(wrk_ms 50% <<<"$out") $(wrk_ms 99% <<<"$out")"
}

# series NAME...: after rounds of runs stored in results[NAME] as
# "rps p50 p99" lines, the medians.
declare -A results
record() { results[$1]+="$2"$'\n'; }
# shellcheck disable=SC2119 # median without "low": the mean of the middle two
med() { echo "${results[$1]}" | awk -v f="$2" 'NF {print $f}' | median; }

metric() { # metric NAME-PREFIX: sum of the series starting with it
  curl -fs "$BASE/metrics" | awk -v p="$1" 'index($0, p) == 1 {s += $NF} END {print s + 0}'
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$host_pid/status"; }

# --- 1. cache hits: wasm against native, Redis tier ------------------------
log "preparing: 100,000 agents (generated on the first run only)"
start_host $(redis_flags)
say "# Benchmark run $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') -t1 on loopback; ${SECONDS_PER_RUN} s per run; medians of $ROUNDS rounds."
say "Dataset: $(curl -fs "$BASE/api/marketplace?limit=1" | sed 's/.*"total":\([0-9]*\).*/\1/') agents on PostgreSQL."
say ""

for path in "$LISTING" "$DETAILS"; do
  curl -fs "$BASE$path" >/dev/null; curl -fs "$BASE/native$path" >/dev/null
  if ! cmp -s <(curl -fs "$BASE$path") <(curl -fs "$BASE/native$path"); then
    echo "the native baseline answers other bytes than the component for $path" >&2; exit 1
  fi
done

peak_rss=0
hits_table() { # hits_table TIER-LABEL CONCURRENCY...
  local tier=$1; shift
  say "| endpoint | connections | wasm rps | native rps | wasm / native | wasm p50 / p99 ms | native p50 / p99 ms |"
  say "|---|---|---|---|---|---|---|"
  for c in "$@"; do
    for name in listing details; do
      local path=$LISTING; [ "$name" = details ] && path=$DETAILS
      for _ in $(seq "$ROUNDS"); do
        record "$tier-$name-$c-wasm" "$(wrk_run "$c" "$path")"
        local rss; rss=$(rss_kb); [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
        record "$tier-$name-$c-native" "$(wrk_run "$c" "/native$path")"
      done
      local w n
      w=$(med "$tier-$name-$c-wasm" 1); n=$(med "$tier-$name-$c-native" 1)
      say "| $name | $c | $w | $n | $(awk -v a="$w" -v b="$n" 'BEGIN {printf "%.2f", a/b}') | $(med "$tier-$name-$c-wasm" 2) / $(med "$tier-$name-$c-wasm" 3) | $(med "$tier-$name-$c-native" 2) / $(med "$tier-$name-$c-native" 3) |"
    done
  done
  say ""
}

log "cache hits, Redis tier"
say "## 1. Cache hits, wasm against native (Redis tier)"
say ""
idle_rss=$(rss_kb)
# shellcheck disable=SC2086
hits_table redis $CONCURRENCY

# --- 5. concurrent misses on one key ---------------------------------------
log "concurrent misses on one key"
say "## 5. Concurrent misses on one key"
say ""
say "| concurrent requests | statements run | computations (2 statements each) |"
say "|---|---|---|"
for n in 16 64; do
  path="/api/marketplace?query=bench$(date +%s%N)&limit=5"
  before=$(metric marketplace_db_statements_total)
  seq "$n" | xargs -P "$n" -I{} curl -fs -o /dev/null "$BASE$path"
  after=$(metric marketplace_db_statements_total)
  say "| $n | $((after - before)) | $(( (after - before) / 2 )) |"
done
say ""

# --- 3. cold against warm ---------------------------------------------------
log "cold (database) against warm (cache)"
say "## 3. Cold (database) against warm (cache), 8 connections"
say ""
say "| path | rps | p50 ms | p99 ms |"
say "|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  record cold "$(wrk_run 8 / bench/cold.lua)"
  record warm "$(wrk_run 8 "$LISTING")"
done
say "| cold: a new listing page each request | $(med cold 1) | $(med cold 2) | $(med cold 3) |"
say "| warm: one listing page, cached | $(med warm 1) | $(med warm 2) | $(med warm 3) |"
say ""

# --- 4. Zipf hit rate -------------------------------------------------------
log "Zipf browse workload"
start_host $(redis_flags)
ZIPF_PAGES=2000 wrk_out 32 15 "$BASE/" -s bench/zipf.lua >/dev/null
hits0=$(metric 'marketplace_cache_operations_total{endpoint="marketplace:agents",tier="redis",outcome="hit"}')
miss0=$(metric 'marketplace_cache_operations_total{endpoint="marketplace:agents",tier="redis",outcome="miss"}')
zipf=$(ZIPF_PAGES=2000 wrk_out 32 15 "$BASE/" -s bench/zipf.lua | wrk_rps)
hits1=$(metric 'marketplace_cache_operations_total{endpoint="marketplace:agents",tier="redis",outcome="hit"}')
miss1=$(metric 'marketplace_cache_operations_total{endpoint="marketplace:agents",tier="redis",outcome="miss"}')
say "## 4. Hit rate over a Zipf browse workload"
say ""
say "2,000 listing pages, Zipf s = 1.1, 32 connections; 15 s of warm-up, then 15 s measured: $zipf rps, $((hits1 - hits0)) hits and $((miss1 - miss0)) misses, **hit rate $(awk -v h=$((hits1 - hits0)) -v m=$((miss1 - miss0)) 'BEGIN {printf "%.1f%%", 100*h/(h+m)}')**."
say ""

# --- 2. memory tier against Redis tier --------------------------------------
log "cache hits, memory tier"
start_host
warm_paths "$BASE"
say "## 2. Cache hits on the memory tier (no Redis)"
say ""
hits_table memory 32
say "Redis tier at 32 connections, for comparison: listing $(med redis-listing-32-wasm 1) rps (wasm), details $(med redis-details-32-wasm 1) rps (wasm)."
say ""

# --- 6. resident memory -----------------------------------------------------
say "## 6. Host resident memory"
say ""
say "Idle after start and warm-up: $((idle_rss / 1024)) MiB; peak sampled under load: $((peak_rss / 1024)) MiB."
say ""

# --- tuning: engine settings, each value against the others in one run ----
# tune TITLE FLAG VALUE...: wasm listing and details, memory tier, 32
# connections, rounds interleaved across the values.
tune() {
  local title=$1 flag=$2; shift 2
  log "tuning: $title"
  say "## Tuning: $title (memory tier, wasm, 32 connections)"
  say ""
  say "| \`$flag\` | listing rps | listing p50 / p99 ms | details rps | details p50 / p99 ms |"
  say "|---|---|---|---|---|"
  for _ in $(seq "$ROUNDS"); do
    for v in "$@"; do
      start_host "$flag" "$v"
      warm_paths "$BASE"
      record "tune$flag$v-l" "$(wrk_run 32 "$LISTING")"
      record "tune$flag$v-d" "$(wrk_run 32 "$DETAILS")"
    done
  done
  for v in "$@"; do
    say "| $v | $(med "tune$flag$v-l" 1) | $(med "tune$flag$v-l" 2) / $(med "tune$flag$v-l" 3) | $(med "tune$flag$v-d" 1) | $(med "tune$flag$v-d" 2) / $(med "tune$flag$v-d" 3) |"
  done
  say ""
}
tune "linear memory kept resident between instances (KiB)" --pool-keep-resident-kb 0 256 1024 4096
tune "fiber stack kept resident between instances (KiB)" --stack-keep-resident-kb 0 256 1024
tune "instance memory initialized copy-on-write or by copying" --memory-init-cow true false
stop_host
echo "report: $report" >&2
