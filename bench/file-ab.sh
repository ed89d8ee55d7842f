#!/usr/bin/env bash
# A/B of userstate binaries on the file store, alternating them so that each sees the same
# disk minutes (this VM's disk speed changes by 2-30x between minutes; see docs/PERFORMANCE.md).
#   bash bench/file-ab.sh RUNS CALLERS SECONDS BINARY [BINARY ...]
# e.g. cp target/release/userstate /tmp/us-new; git stash; cargo build --release -p userstate-cli;
#      cp target/release/userstate /tmp/us-old; git stash pop
#      bash bench/file-ab.sh 3 64 5 /tmp/us-old /tmp/us-new
# A BINARY may carry bench flags after it, quoted as one word ("/tmp/us-new --plain"): they go
# after `bench`.
# WORKLOAD=create (default lock-unlock) picks the workload, STORE=memory (default file) the store.
# Prints min / median / max commands/s and CPU µs per command (cpu_us_per_command, where the
# binary reports it) per binary, and the in-place fsync floor of the same runs.
set -euo pipefail
runs=$1; callers=$2; secs=$3; shift 3
workload=${WORKLOAD:-lock-unlock}; store=${STORE:-file}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/userstate-ab.XXXXXX"); log=$scratch/runs.jsonl
trap 'rm -rf "$scratch"' EXIT
echo "# $(date -u +%FT%TZ) $workload on $store, $callers callers, load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$runs"); do
  for bin in "$@"; do
    rm -rf "$scratch/data"
    read -r -a cmd <<< "$bin"
    store_args=(--store memory)
    [ "$store" = file ] && store_args=(--store file --data "$scratch/data")
    "${cmd[0]}" bench "${cmd[@]:1}" "${store_args[@]}" --workload "$workload" --users 10000 \
      --concurrency "$callers" --seconds "$secs" --json 2>/dev/null | sed "s|^|${bin// /_} |" >> "$log"
  done
done
echo "# done $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$log" "$store" <<'PY'
import json, statistics, sys
runs, floors = {}, []
for line in open(sys.argv[1]):
    name, row = line.split(" ", 1)
    r = json.loads(row)
    if r["store"] == sys.argv[2]:
        runs.setdefault(name, []).append(r)
    elif r.get("mode") == "in-place":
        floors.append((r["records_per_sync"], r["sync_p50_us"], r.get("sync_p99_us", 0)))
def spread(xs, digits=0):
    xs = sorted(xs)
    return f"min {xs[0]:.{digits}f} median {statistics.median(xs):.{digits}f} max {xs[-1]:.{digits}f}"
for name, rs in runs.items():
    c = [r["commands_per_s"] for r in rs]
    p99 = statistics.median(r["p99_us"] for r in rs)
    cpu = [r["cpu_us_per_command"] for r in rs if "cpu_us_per_command" in r]
    print(f"{name}: commands/s {spread(c)}; p99 median {p99:.0f} us; runs {[round(x) for x in c]}")
    if cpu:
        print(f"{name}: CPU us/command {spread(cpu, 1)}; runs {[round(x, 1) for x in cpu]}")
for n in (1, 64):
    f = sorted(p for k, p, _ in floors if k == n)
    t = sorted(q for k, _, q in floors if k == n)
    if f:
        print(f"floor in place, {n} record(s) per sync: p50 {f[0]:.0f}-{f[-1]:.0f} us, "
              f"p99 {t[0]:.0f}-{t[-1]:.0f} us")
PY
