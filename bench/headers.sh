#!/usr/bin/env bash
# What a request's headers cost: one release host (instance reuse 1000,
# memory tier), the details cache hit through its component and through the
# native baseline, each with no header but wrk's `Host` and with N more,
# round after round; prints each run's throughput and host CPU time per
# request (BENCHMARKS.md, "a seventh run").
#
#   N=8 ROUNDS=3 BIN=path/to/marketplace-host MANIFEST=components.toml bash bench/headers.sh
#
# Run bench/run.sh once first (it builds the host and seeds the database).
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=bench/common.sh
. bench/common.sh
BIN=${BIN:-$HOST}; N=${N:-8}; ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
bench_serve "" "$BIN" 18300 "$work/state" "$work/log" \
  --manifest "${MANIFEST:-components.toml}" --instance-reuse 1000
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
if ! wait_up http://127.0.0.1:18300/api/marketplace/categories 300 0.3 "$pid"; then
  cat "$work/log" >&2; exit 1
fi
warm_paths http://127.0.0.1:18300
extra=()
for i in $(seq "$N"); do extra+=(-H "x-extra-header-$i: some-value-$i"); done
for r in $(seq "$ROUNDS"); do
  for v in wasm0 wasmN native0 nativeN; do
    path=$DETAILS; [[ $v == native* ]] && path=/native$path
    headers=(); [[ $v == *N ]] && headers=("${extra[@]}")
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out=$(wrk_out 32 5 "http://127.0.0.1:18300$path" "${headers[@]}")
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    n=$(wrk_requests <<<"$out"); rps=$(wrk_rps <<<"$out")
    echo "round $r $v: ${rps%.*} rps, $(( (t1-t0)*10000000/n )) ns cpu/req"
  done
done
