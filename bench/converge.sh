#!/usr/bin/env bash
# Convergence time between two hosts on one PostgreSQL database, as in
# BENCHMARKS.md "Fleet deploys": host A and host B (each its own state
# directory), two different builds deployed alternately as the templates
# component through A's admin API, 0.2 s apart; the time from A's answer
# until B's admin API shows B serving the new version (bench/converge.py).
# The first round of each build includes B compiling it; afterwards B
# keeps both and only swaps, so the figure is the notification's way and
# the swap.
#
#   bash bench/converge.sh [ROUNDS] [BINARY]
#
# BINARY defaults to the debug host (cargo build -p host).
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=bench/common.sh
. bench/common.sh
ROUNDS=${1:-100}
BIN=${2:-target/debug/marketplace-host}
TOKEN="converge-$RANDOM$RANDOM"
DB=marketplace_converge
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

cargo xtask components >&2
psql -q "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >&2
for port in 18301 18302; do
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" --database-url "$PG_BASE/$DB" \
    --demo-data false --state-dir "$work/state-$port" --watch-components false \
    --admin-token "$TOKEN" >"$work/$port.log" 2>&1 &
  pids+=($!)
done
wait_up http://127.0.0.1:18301/healthz 600 0.2
wait_up http://127.0.0.1:18302/healthz 600 0.2
dir=target/wasm32-wasip2/release
python3 bench/converge.py http://127.0.0.1:18301 http://127.0.0.1:18302 "$TOKEN" templates \
  "$dir/greeter_v1.wasm" "$dir/greeter_v2.wasm" "$ROUNDS" >"$work/ms"
# The first two rounds compile each build once on B; the rest load it.
echo "| rounds | first two (compiling) ms | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|"
head -2 "$work/ms" | paste -sd/ | awk '{printf "| %s ", '"$ROUNDS"'; printf "| %s ", $0}'
tail -n +3 "$work/ms" | sort -g | awk '{a[NR]=$1} END {
  printf "| %.2f | %.2f | %.2f |\n", a[int((NR+1)/2)], a[int(NR*0.99+0.5)], a[NR] }'
