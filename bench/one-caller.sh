#!/usr/bin/env bash
# Where one caller's time goes, per durable command, read from counters that a busy machine
# disturbs far less than a rate: context switches, futex calls, CPU time (task-clock) and
# fdatasyncs of the whole process, counted by `perf stat` attached for WINDOW seconds in the
# middle of the timed part of `userstate bench --store file --concurrency CALLERS` (so neither
# setup nor the floor's own syncs are counted). At one caller each command is one batch, so
# the counts are divided by the fdatasyncs of the window; the command count of the window is
# estimated from the run's commands/s.
#   bash bench/one-caller.sh RUNS CALLERS BINARY [BINARY ...]     (root, or perf_event_paranoid <= 1)
# Alternates the binaries; prints one line per run and min / median / max per binary.
set -euo pipefail
runs=$1; callers=$2; shift 2
window=${WINDOW:-3}; secs=$((window + 3))
scratch=$(mktemp -d "${TMPDIR:-/tmp}/userstate-onecaller.XXXXXX"); trap 'rm -rf "$scratch"' EXIT
echo "# $(date -u +%FT%TZ) $callers caller(s), ${window}s window, load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$runs"); do
  for bin in "$@"; do
    rm -rf "$scratch/data"
    "$bin" bench --store file --data "$scratch/data" --users 100 --concurrency "$callers" \
      --seconds "$secs" --json > "$scratch/out" 2>/dev/null &
    pid=$!
    sleep 1.5
    perf stat -x, -e context-switches,cpu-migrations,syscalls:sys_enter_futex,syscalls:sys_enter_fdatasync,task-clock \
      -p "$pid" -- sleep "$window" 2> "$scratch/perf"
    wait "$pid"
    python3 - "$bin" "$scratch/out" "$scratch/perf" "$window" <<'PY' | tee -a "$scratch/rows"
import json, sys
name, out, perf, window = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = [json.loads(l) for l in open(out)]
run = next(r for r in rows if r["store"] == "file")
floor = next(r for r in rows if r.get("mode") == "in-place" and r["records_per_sync"] == 1)
c = {}
for line in open(perf):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        c[f[2]] = float(f[0])
syncs = c.get("syscalls:sys_enter_fdatasync", 0) or 1
cmds = run["commands_per_s"] * window
print(json.dumps({"bin": name, "commands_per_s": round(run["commands_per_s"]),
    "p50_us": run["p50_us"], "floor_p50_us": round(floor["sync_p50_us"]),
    "floor_per_s": round(floor.get("syncs_per_s", 0) or 0),
    "syncs_per_command": round(syncs / cmds, 3),
    "ctx_per_sync": round(c.get("context-switches", 0) / syncs, 2),
    "futex_per_sync": round(c.get("syscalls:sys_enter_futex", 0) / syncs, 2),
    "migrations_per_sync": round(c.get("cpu-migrations", 0) / syncs, 2),
    "cpu_us_per_sync": round(c.get("task-clock", 0) * 1e3 / syncs, 1)}))
PY
  done
done
python3 - "$scratch/rows" <<'PY'
import json, statistics, sys
by = {}
for l in open(sys.argv[1]):
    r = json.loads(l); by.setdefault(r["bin"], []).append(r)
for name, rs in by.items():
    for k in ("commands_per_s", "p50_us", "floor_p50_us", "ctx_per_sync", "futex_per_sync", "cpu_us_per_sync"):
        xs = sorted(r[k] for r in rs)
        print(f"{name}: {k} min {xs[0]} median {statistics.median(xs)} max {xs[-1]}")
PY
