#!/usr/bin/env bash
# A/B runs of engine settings, as in BENCHMARKS.md "Tuning": starts one
# release host per variant (all on the database bench/run.sh seeds, memory
# tier), then interleaves wrk runs on the listing and details cache hits
# across the variants, round after round, and prints per variant the median
# throughput, the median host CPU time per request (utime + stime of the
# host process over the run, divided by the requests served) and the median
# p99 latency.
#
#   bash bench/ab.sh ROUNDS SECONDS CONNECTIONS "name|manifest|flags|binary|env" ...
#
# CONNECTIONS may be a list ("32 64"): each round runs every variant at
# each of them.
# A variant whose name starts with "native" is driven on the native
# baseline's paths (/native/...). Empty fields take the defaults: the
# workspace's components.toml, no extra flags, target/release/marketplace-host.
# Run bench/run.sh once first (it builds the host and seeds the database).
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=bench/common.sh
. bench/common.sh
ROUNDS=$1; SECS=$2; C=$3; shift 3
work=$(mktemp -d)
port=18100; names=(); ports=(); pids=()
for v in "$@"; do
  IFS="|" read -r name manifest flags bin envs <<<"$v"
  port=$((port+1))
  # shellcheck disable=SC2086 # the flags are split into words
  bench_serve "$envs" "${bin:-$HOST}" "$port" "$work/state-$name" "$work/$name.log" \
    --manifest "${manifest:-components.toml}" $flags
  pids+=("$!"); names+=("$name"); ports+=("$port")
  trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
  # One after the other: hosts starting at once race to prepare the
  # database's component role.
  if ! wait_up "http://127.0.0.1:$port/api/marketplace/categories" 300 0.3 "$!"; then
    echo "variant $name did not come up:" >&2; cat "$work/$name.log" >&2; exit 1
  fi
done
for p in "${ports[@]}"; do
  warm_paths "http://127.0.0.1:$p"
  for c in $C; do
    wrk_out "$c" 2 "http://127.0.0.1:$p$LISTING" >/dev/null; wrk_out "$c" 2 "http://127.0.0.1:$p$DETAILS" >/dev/null
  done
done
declare -A R U P
for _ in $(seq "$ROUNDS"); do
  for c in $C; do
    for i in "${!names[@]}"; do
      for kind in L D; do
        if [ "$kind" = L ]; then path=$LISTING; else path=$DETAILS; fi
        [[ "${names[$i]}" == native* ]] && path="/native$path"
        t0=$(awk '{print $14+$15}' "/proc/${pids[$i]}/stat")
        out=$(wrk_out "$c" "$SECS" "http://127.0.0.1:${ports[$i]}$path" --latency)
        t1=$(awk '{print $14+$15}' "/proc/${pids[$i]}/stat")
        if grep -q "Non-2xx" <<<"$out"; then echo "wrk saw errors on ${names[$i]} $path:" >&2; echo "$out" >&2; exit 1; fi
        rps=$(wrk_rps <<<"$out"); rps=${rps%.*}
        n=$(wrk_requests <<<"$out")
        k=${names[$i]}-$kind-$c
        R[$k]="${R[$k]:-} $rps"
        U[$k]="${U[$k]:-} $(( (t1-t0)*10000000/n ))"
        P[$k]="${P[$k]:-} $(wrk_ms 99% <<<"$out")"
      done
    done
  done
done
# med VALUES: the median of the blank-separated VALUES, the lower middle one
# of an even count.
med() { median low <<<"$1"; }
for c in $C; do
  for n in "${names[@]}"; do
    line="$n c$c"
    for kind in L D; do
      k=$n-$kind-$c
      [ "$kind" = L ] && what=listing || what=details
      line+=" $what: $(med "${R[$k]}") rps, $(med "${U[$k]}") ns cpu/req, p99 $(med "${P[$k]}") ms [${R[$k]} ]"
    done
    echo "$line"
  done
done
