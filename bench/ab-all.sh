#!/usr/bin/env bash
# Issue 29's proof: alternates userstate binaries on the embedded and the HTTP figures, so each
# sees the same minutes, and prints min / median / max per binary and figure with the disk's
# floors measured by the same runs.
#   bash bench/ab-all.sh ROUNDS BINARY [BINARY ...]
# Per round and binary: `userstate bench --store file` at 64 and at 1 caller (10k users, 5 s;
# it prints the fsync floors), `--store memory` at 64 callers, and `bench/wrk/run.sh` on the
# file and the memory store (4000 users, 64 connections, 10 s). Raw lines stay in $OUT
# (default: a temporary file, printed at the end).
# FLOOR=path/to/http_floor adds, per round, the same wrk run against hyper and axum alone
# (crates/userstate-server/examples/http_floor.rs: no engine, no store), the HTTP ceiling of
# the same minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
out=${OUT:-$(mktemp /tmp/userstate-ab-all.XXXXXX)}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/userstate-ab-all.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    echo "# round $round $bin $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
    for c in 64 1; do
      rm -rf "$scratch/data"
      "$bin" bench --store file --data "$scratch/data" --users 10000 --concurrency "$c" \
        --seconds 5 --json 2>/dev/null | sed "s|^|$bin bench |" >> "$out"
    done
    "$bin" bench --store memory --users 10000 --concurrency 64 --seconds 5 --json 2>/dev/null \
      | sed "s|^|$bin bench |" >> "$out"
    for store in file memory; do
      BIN=$bin bash bench/wrk/run.sh "$store" 4000 64 10 2>/dev/null \
        | sed "s|^|$bin wrk-$store |" >> "$out"
    done
  done
  if [ -n "${FLOOR:-}" ]; then
    BIN=$FLOOR bash bench/wrk/run.sh memory 4000 64 10 2>/dev/null \
      | sed "s|^|$FLOOR wrk-floor |" >> "$out"
  fi
done
python3 - "$out" <<'PY'
import json, re, statistics, sys
figs, floors = {}, {}
def add(key, value):
    figs.setdefault(key, []).append(value)
def ms(text):  # wrk prints 850.00us, 5.23ms or 1.02s
    for suffix, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    name, kind, rest = line.rstrip("\n").split(" ", 2)
    if kind == "bench":
        r = json.loads(rest)
        if r["store"] == "fsync-floor":
            if r["mode"] == "in-place":
                floors.setdefault(r["records_per_sync"], []).append(
                    (r["sync_p50_us"], r.get("sync_p99_us", 0)))
            continue
        key = (name, f'{r["store"]} {r["concurrency"]} callers')
        add(key + ("commands/s",), r["commands_per_s"])
        add(key + ("p99 us",), r["p99_us"])
    else:
        m = re.search(r"Requests/sec:\s+([\d.]+)", rest)
        if m:
            add((name, kind, "req/s"), float(m.group(1)))
        m = re.search(r"^\s+99%\s+(\S+)", rest)
        if m:
            add((name, kind, "p99 ms"), ms(m.group(1)))
        m = re.search(r"\(([\d.]+) us per request\)", rest)
        if m:
            add((name, kind, "server CPU us/request"), float(m.group(1)))
for (name, fig, what), vs in sorted(figs.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
    vs = sorted(vs)
    print(f"{fig:<22} {what:<22} {name}: min {vs[0]:.1f} median {statistics.median(vs):.1f} "
          f"max {vs[-1]:.1f}  runs {[round(v, 1) for v in vs]}")
for n, f in sorted(floors.items()):
    p50 = sorted(a for a, _ in f); p99 = sorted(b for _, b in f)
    print(f"floor in place, {n} record(s) per sync: p50 {p50[0]:.0f}-{p50[-1]:.0f} us, "
          f"p99 {p99[0]:.0f}-{p99[-1]:.0f} us ({len(f)} runs)")
print(f"raw lines: {sys.argv[1]}")
PY
