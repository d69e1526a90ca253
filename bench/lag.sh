#!/usr/bin/env bash
# Invalidation lag between two hosts on one PostgreSQL database, as in
# BENCHMARKS.md "Invalidation lag": for each way a write can reach the
# other host, starts host A and host B, installs agents through A and
# measures how long after A's answer B first shows the install
# (bench/lag.py), and prints the median and p99 per way.
#
#   bash bench/lag.sh [ROUNDS] [BINARY]
#
# The ways: Redis on both hosts (A's request tells Redis before it
# answers); B without Redis (B's memory tier hears PostgreSQL's
# notification); A without Redis (a relay delivers the outbox to Redis).
# BINARY defaults to the release host; run bench/run.sh once first (it
# builds it and seeds the bench database).
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
. bench/common.sh
ROUNDS=${1:-200}
BIN=${2:-$HOST}
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

run=$(date +%s%N)
prefix="lag-$run"
# One user, a member of a fresh workspace per round.
token=$("$BIN" create-token --database-url "$PG_BASE/$DB_NAME" --user "lag-$run" \
  --workspace "$prefix-0" --label "bench/lag.sh" 2>/dev/null | tail -1)
psql -q "$PG_BASE/$DB_NAME" -c "
  INSERT INTO workspaces (id, name, created_at)
    SELECT '$prefix-' || i, '$prefix-' || i, 0 FROM generate_series(1, $ROUNDS * 3) AS i;
  INSERT INTO workspace_members (workspace_id, user_id, role)
    SELECT '$prefix-' || i, 'lag-$run', 'member' FROM generate_series(1, $ROUNDS * 3) AS i;"

port=18200
# measure NAME A_FLAGS B_FLAGS: one way, ROUNDS installs.
measure() {
  local name=$1 a_flags=$2 b_flags=$3 a b
  port=$((port + 2)); a=$port; b=$((port + 1))
  # shellcheck disable=SC2086 # the flags are split on purpose
  bench_serve "" "$BIN" "$a" "$work/a-$name" "$work/a-$name.log" $a_flags; pids+=($!)
  # shellcheck disable=SC2086
  bench_serve "" "$BIN" "$b" "$work/b-$name" "$work/b-$name.log" $b_flags; pids+=($!)
  wait_up "http://127.0.0.1:$a/healthz" 600 0.2 && wait_up "http://127.0.0.1:$b/healthz" 600 0.2
  # Each way takes its own third of the workspaces.
  local way=$(( (port - 18202) / 2 ))
  local offset=$(( way * ROUNDS ))
  python3 bench/lag.py "http://127.0.0.1:$a" "http://127.0.0.1:$b" "$token" "$prefix" "$ROUNDS" \
    --offset "$offset" >"$work/$name.ms"
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; pids=()
  sort -g "$work/$name.ms" | awk -v name="$name" '{a[NR]=$1} END {
    printf "| %s | %d | %.2f | %.2f | %.2f |\n", name, NR, a[int((NR+1)/2)], a[int(NR*0.99+0.5)], a[NR] }'
}

redis="--redis-url $REDIS --redis-prefix lag:$run:"
echo "| way | rounds | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|"
measure "Redis on both hosts" "$redis" "$redis"
measure "B without Redis: PostgreSQL notification" "$redis" ""
measure "A without Redis: outbox relay to Redis" "" "$redis"
