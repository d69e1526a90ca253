#!/usr/bin/env bash
# Fair shares: the cache-hit throughput of /api/marketplace/categories while
# LOOPS requests to a looping component run, against the same host with
# none, interleaved over ROUNDS rounds. Needs wrk and the built components
# (`cargo xtask components`).
#
#   bash bench/fair.sh BINARY [LOOPS] [ROUNDS]
#   bash bench/fair.sh target/debug/marketplace-host 2 3
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh
bin=${1:?usage: bench/fair.sh BINARY [LOOPS] [ROUNDS]}
loops=${2:-2}
rounds=${3:-3}
components="$PWD/target/wasm32-wasip2/release"

# Requests per second of one 5 s wrk run with `$1` looping requests.
measure() {
  local n=$1 work port pid
  work=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$work/components.toml" <<TOML
dir = "$components"
[[component]]
name = "marketplace"
file = "marketplace.wasm"
routes = ["/api/marketplace"]
[[component]]
name = "fixtures"
file = "fixtures.wasm"
routes = ["/fixture"]
TOML
  env -u REDIS_URL -u DATABASE_URL "$bin" serve --listen "127.0.0.1:$port" \
    --database-url "sqlite://$work/db.sqlite" --manifest "$work/components.toml" \
    --state-dir "$work/state" --watch-components false --request-timeout-ms 12000 \
    >"$work/host.log" 2>&1 &
  pid=$!
  wait_up "127.0.0.1:$port/healthz" 100 0.2 || true
  curl -fs "127.0.0.1:$port/api/marketplace/categories" >/dev/null
  for _ in $(seq "$n"); do curl -s "127.0.0.1:$port/fixture/loop" >/dev/null & done
  sleep 1
  wrk_out 8 5 "http://127.0.0.1:$port/api/marketplace/categories" | wrk_rps
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}

quiet=() busy=()
for _ in $(seq "$rounds"); do
  quiet+=("$(measure 0)")
  busy+=("$(measure "$loops")")
done
q=$(printf '%s\n' "${quiet[@]}" | median low)
b=$(printf '%s\n' "${busy[@]}" | median low)
echo "no loops: ${quiet[*]} rps (median $q)"
echo "$loops loops: ${busy[*]} rps (median $b)"
awk -v q="$q" -v b="$b" 'BEGIN {printf "ratio: %.2f\n", b / q}'
