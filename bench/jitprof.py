#!/usr/bin/env python3
"""Instructions per function of a callgrind profile, the compiled
components' functions named.

callgrind cannot name the code wasmtime compiles at run time; with
`MARKETPLACE_PERF_MAP=1` the host writes `/tmp/perf-{pid}.map` (wasmtime's
perf map: start, size and name of every compiled function), and this
script names callgrind's addresses from it. Self cost only (no callees),
divided by `per` (the requests the profile holds), largest first; lines
of the components' functions start with `[wasm]`.

    MARKETPLACE_PERF_MAP=1 HTTP_BENCH_DIR=/tmp/hb HTTP_BENCH_CASE=details_reuse \\
      HTTP_BENCH_ITERS=5000 valgrind --tool=callgrind --collect-atstart=no \\
      --toggle-collect='*measured_requests*' --dump-instr=yes --compress-pos=no \\
      --compress-strings=no --callgrind-out-file=cg.out target/release/deps/http-HASH --bench
    python3 bench/jitprof.py cg.out /tmp/perf-PID.map 5000 40

PID is valgrind's (the `==PID==` prefix of its output).
"""
import bisect
import collections
import sys


def main():
    out, perf_map = sys.argv[1], sys.argv[2]
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    symbols = []
    for line in open(perf_map):
        parts = line.rstrip("\n").split(" ", 2)
        if len(parts) == 3:
            symbols.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
    symbols.sort()
    starts = [s[0] for s in symbols]

    def jit_name(address):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < symbols[i][0] + symbols[i][1]:
            return symbols[i][2]
        return None

    cost = collections.Counter()
    function = None
    skip = False
    for line in open(out):
        if skip:
            # The inclusive cost of the call named on the line before.
            skip = False
        elif line.startswith("fn="):
            function = line[3:].strip()
        elif line.startswith("calls="):
            skip = True
        elif line.startswith("0x"):
            parts = line.split()
            address, instructions = int(parts[0], 16), int(parts[-1])
            name = jit_name(address)
            cost["[wasm] " + name if name else function] += instructions
    total = sum(cost.values())
    wasm = sum(v for k, v in cost.items() if k.startswith("[wasm]"))
    print(f"total {total / per:,.0f}, of which in the components' code {wasm / per:,.0f}")
    for name, instructions in cost.most_common(top):
        print(f"{instructions / per:>10,.0f}  {name[:140]}")


if __name__ == "__main__":
    main()
