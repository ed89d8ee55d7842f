#!/usr/bin/env bash
# A/B of userstate binaries on the file store, alternating them so that each sees the same
# disk minutes (this VM's disk speed changes by 2-30x between minutes; see docs/PERFORMANCE.md).
#   bash bench/file-ab.sh RUNS CALLERS SECONDS BINARY [BINARY ...]
# e.g. cp target/release/userstate /tmp/us-new; git stash; cargo build --release -p userstate-cli;
#      cp target/release/userstate /tmp/us-old; git stash pop
#      bash bench/file-ab.sh 3 64 5 /tmp/us-old /tmp/us-new
# Prints min / median / max commands/s per binary and the in-place fsync floor of the same runs.
set -euo pipefail
runs=$1; callers=$2; secs=$3; shift 3
scratch=$(mktemp -d "${TMPDIR:-/tmp}/userstate-ab.XXXXXX"); log=$scratch/runs.jsonl
trap 'rm -rf "$scratch"' EXIT
for _ in $(seq 1 "$runs"); do
  for bin in "$@"; do
    rm -rf "$scratch/data"
    "$bin" bench --store file --data "$scratch/data" --users 10000 --concurrency "$callers" \
      --seconds "$secs" --json 2>/dev/null | sed "s|^|$bin |" >> "$log"
  done
done
python3 - "$log" <<'PY'
import json, statistics, sys
runs, floors = {}, []
for line in open(sys.argv[1]):
    name, row = line.split(" ", 1)
    r = json.loads(row)
    if r["store"] == "file":
        runs.setdefault(name, []).append(r)
    elif r.get("mode") == "in-place":
        floors.append((r["records_per_sync"], r["sync_p50_us"], r.get("sync_p99_us", 0)))
for name, rs in runs.items():
    c = sorted(r["commands_per_s"] for r in rs)
    p99 = statistics.median(r["p99_us"] for r in rs)
    print(f"{name}: commands/s min {c[0]:.0f} median {statistics.median(c):.0f} max {c[-1]:.0f}; "
          f"p99 median {p99:.0f} us; runs {[round(x) for x in c]}")
for n in (1, 64):
    f = sorted(p for k, p, _ in floors if k == n)
    t = sorted(q for k, _, q in floors if k == n)
    if f:
        print(f"floor in place, {n} record(s) per sync: p50 {f[0]:.0f}-{f[-1]:.0f} us, "
              f"p99 {t[0]:.0f}-{t[-1]:.0f} us")
PY
