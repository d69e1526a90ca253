# shellcheck shell=bash disable=SC2034
# What the benchmark scripts share; sourced by bench/run.sh, bench/ab.sh and
# bench/fair.sh once they are at the repository root:
#
#   . bench/common.sh
#
# Defines variables and functions only, and runs nothing; fits scripts
# under `set -u` as well as under `set -euo pipefail`.

# The bench database on the PostgreSQL server BENCH_DB_URL (run.sh creates
# and seeds it), and the release host.
PG_BASE="${BENCH_DB_URL:-postgres://postgres@127.0.0.1:5432}"
DB_NAME=marketplace_bench
HOST=$PWD/target/release/marketplace-host
# The two cache hits measured: a listing page and an agent's details.
LISTING="/api/marketplace?category=coding&sortBy=popular&limit=20"
DETAILS="/api/marketplace/agents/agent-000042"

# bench_serve ENV BINARY PORT STATE_DIR LOG [FLAGS...]: starts BINARY serve
# in the background on 127.0.0.1:PORT with the bench settings (the bench
# database, 100,000 demo agents, no component watching, the native baseline
# under /native, 512 requests in flight), then FLAGS. ENV is "VAR=value ..."
# for the host's environment (may be empty); STATE_DIR its --state-dir; its
# output goes to LOG. The host's pid is in $! afterwards.
bench_serve() {
  local envs=$1 bin=$2 port=$3 state=$4 log=$5; shift 5
  # shellcheck disable=SC2086 # ENV is split into its assignments
  env $envs RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" \
    --database-url "$PG_BASE/$DB_NAME" --demo-data true --demo-agents 100000 \
    --state-dir "$state" --watch-components false \
    --native-baseline true --max-in-flight 512 "$@" >"$log" 2>&1 &
}

# wait_up URL TRIES PAUSE [PID]: asks URL (curl) until it answers, at most
# TRIES times, PAUSE seconds apart. Status 0 once it answered, 1 when the
# process PID (if given) has ended, 2 when the tries ran out.
wait_up() {
  local url=$1 tries=$2 pause=$3 pid=${4:-}
  for _ in $(seq "$tries"); do
    curl -fs "$url" >/dev/null 2>&1 && return 0
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
    sleep "$pause"
  done
  return 2
}

# warm_paths BASE: requests the listing and the details once each from the
# host at BASE ("http://127.0.0.1:PORT"), so that the runs are cache hits.
warm_paths() {
  curl -fs "$1$LISTING" >/dev/null
  curl -fs "$1$DETAILS" >/dev/null
}

# wrk_out CONNECTIONS SECONDS URL [WRK FLAGS...]: one wrk run (one thread)
# on URL; prints wrk's report.
wrk_out() {
  local c=$1 secs=$2 url=$3; shift 3
  wrk -t1 -c"$c" -d"${secs}s" "$@" "$url"
}
# wrk_rps, wrk_requests: from a wrk report on stdin, the requests per second
# (as wrk prints them, two decimals) and the number of requests served.
wrk_rps() { awk '/Requests\/sec/ {print $2}'; }
wrk_requests() { awk '/requests in/ {print $1}'; }
# wrk_ms PERCENTILE: from a wrk --latency report on stdin, the latency at
# PERCENTILE ("50%", "99%") in milliseconds.
wrk_ms() { to_ms "$(awk -v p="$1" '$1 == p {print $2}')"; }
# to_ms LATENCY: one of wrk's latencies ("812.00us", "1.20ms", "2.01s") in
# milliseconds, three decimals.
to_ms() {
  echo "$1" | awk '/us$/ {sub("us","",$1); printf "%.3f", $1/1000; next}
                   /ms$/ {sub("ms","",$1); printf "%.3f", $1; next}
                   /s$/  {sub("s","",$1);  printf "%.3f", $1*1000; next}'
}

# median [low]: the median of the numbers on stdin (blank- or line-separated);
# of an even count, the mean of the two middle ones, or with "low" the lower
# of them (what ab.sh and fair.sh report).
median() {
  tr ' ' '\n' | grep -v '^$' | sort -g |
    awk -v low="${1:-}" '{a[NR]=$1} END {print (NR%2 || low != "" ? a[int((NR+1)/2)] : (a[NR/2]+a[NR/2+1])/2)}'
}
