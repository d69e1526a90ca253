#!/usr/bin/env bash
# A/B runs of engine settings, as in BENCHMARKS.md "Tuning": starts one
# release host per variant (all on the database bench/run.sh seeds, memory
# tier), then interleaves wrk runs on the listing and details cache hits
# across the variants, round after round, and prints per variant the median
# throughput and the median host CPU time per request (utime + stime of the
# host process over the run, divided by the requests served).
#
#   bash bench/ab.sh ROUNDS SECONDS CONNECTIONS "name|manifest|flags|binary|env" ...
#
# A variant whose name starts with "native" is driven on the native
# baseline's paths (/native/...). Empty fields take the defaults: the
# workspace's components.toml, no extra flags, target/release/marketplace-host.
# Run bench/run.sh once first (it builds the host and seeds the database).
set -u
cd "$(dirname "$0")/.."
ROUNDS=$1; SECS=$2; C=$3; shift 3
HOST=$PWD/target/release/marketplace-host
DB="${BENCH_DB_URL:-postgres://postgres@127.0.0.1:5432}/marketplace_bench"
work=$(mktemp -d)
L="/api/marketplace?category=coding&sortBy=popular&limit=20"
D="/api/marketplace/agents/agent-000042"
port=18100; names=(); ports=(); pids=()
for v in "$@"; do
  IFS="|" read -r name manifest flags bin envs <<<"$v"; H=${bin:-$HOST}
  port=$((port+1))
  env $envs RUST_LOG=warn $H serve --listen 127.0.0.1:$port --database-url $DB --demo-agents 100000 \
    --state-dir $work/state-$name --watch-components false --native-baseline true \
    --max-in-flight 512 --manifest ${manifest:-components.toml} $flags >$work/$name.log 2>&1 &
  pids+=($!); names+=($name); ports+=($port)
done
trap 'kill ${pids[@]} 2>/dev/null; rm -rf "$work"' EXIT
for p in "${ports[@]}"; do
  for i in $(seq 100); do curl -fs "http://127.0.0.1:$p/api/marketplace/categories" >/dev/null 2>&1 && break; sleep 0.3; done
  curl -fs "http://127.0.0.1:$p$L" >/dev/null; curl -fs "http://127.0.0.1:$p$D" >/dev/null
  wrk -t1 -c$C -d2s "http://127.0.0.1:$p$L" >/dev/null; wrk -t1 -c$C -d2s "http://127.0.0.1:$p$D" >/dev/null
done
declare -A R U
for r in $(seq $ROUNDS); do
  for i in "${!names[@]}"; do
    for kind in L D; do
      path=${!kind}
      [[ "${names[$i]}" == native* ]] && path="/native$path"
      t0=$(awk '{print $14+$15}' /proc/${pids[$i]}/stat)
      out=$(wrk -t1 -c$C -d${SECS}s "http://127.0.0.1:${ports[$i]}$path")
      t1=$(awk '{print $14+$15}' /proc/${pids[$i]}/stat)
      rps=$(echo "$out" | awk '/Requests\/sec/{print int($2)}')
      n=$(echo "$out" | awk '/requests in/{print $1}')
      R[${names[$i]}-$kind]="${R[${names[$i]}-$kind]:-} $rps"
      U[${names[$i]}-$kind]="${U[${names[$i]}-$kind]:-} $(( (t1-t0)*10000000/n ))"
    done
  done
done
med() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
for n in "${names[@]}"; do echo "$n listing: $(med "${R[$n-L]}") rps, $(med "${U[$n-L]}") ns cpu/req [${R[$n-L]} ] details: $(med "${R[$n-D]}") rps, $(med "${U[$n-D]}") ns cpu/req [${R[$n-D]} ]"; done
