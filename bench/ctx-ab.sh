#!/usr/bin/env bash
# Context switches and futex calls per command of userstate binaries on the file store,
# alternating them as bench/file-ab.sh does. `perf stat` attaches to each bench process for
# the middle of its timed part only (from 1 s after start, for SECONDS-2 s), so the store's
# setup and the fsync floor the bench measures after the run are not counted; the commands
# in that window are estimated as commands/s of the run x the window.
#   bash bench/ctx-ab.sh RUNS CALLERS SECONDS BINARY [BINARY ...]     (SECONDS >= 4; needs perf)
# A BINARY may carry bench flags after it, quoted as one word ("/tmp/us-new --plain").
# WORKLOAD=create (default lock-unlock) picks the workload.
set -euo pipefail
runs=$1; callers=$2; secs=$3; shift 3
workload=${WORKLOAD:-lock-unlock}
window=$((secs - 2))
scratch=$(mktemp -d "${TMPDIR:-/tmp}/userstate-ctx.XXXXXX"); log=$scratch/runs.txt
trap 'rm -rf "$scratch"' EXIT
echo "# $(date -u +%FT%TZ) $workload on file, $callers callers, load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq 1 "$runs"); do
  for bin in "$@"; do
    rm -rf "$scratch/data"
    read -r -a cmd <<< "$bin"
    "${cmd[0]}" bench "${cmd[@]:1}" --store file --data "$scratch/data" --workload "$workload" \
      --users 10000 --concurrency "$callers" --seconds "$secs" --json > "$scratch/out.json" 2>/dev/null &
    pid=$!
    sleep 1
    perf stat -x, -e context-switches,syscalls:sys_enter_futex -p "$pid" -- sleep "$window" \
      2> "$scratch/perf.csv" > /dev/null || true
    wait "$pid"
    row=$(grep '"store":"file"' "$scratch/out.json" | head -1)
    echo "${bin// /_} $(awk -F, '{printf "%s ", $1}' "$scratch/perf.csv") $row" >> "$log"
  done
done
echo "# done $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$log" "$window" <<'PY'
import json, statistics, sys
window = float(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    name, ctx, futex, row = line.split(" ", 3)
    r = json.loads(row)
    commands = r["commands_per_s"] * window
    runs.setdefault(name, []).append((int(ctx) / commands, int(futex) / commands,
                                      r.get("cpu_us_per_command", 0), r["commands_per_s"]))
def spread(xs, digits=2):
    xs = sorted(xs)
    return f"min {xs[0]:.{digits}f} median {statistics.median(xs):.{digits}f} max {xs[-1]:.{digits}f}"
for name, rs in runs.items():
    print(f"{name}: context switches/command {spread([r[0] for r in rs])}; "
          f"futex calls/command {spread([r[1] for r in rs])}; "
          f"CPU us/command {spread([r[2] for r in rs], 1)}; commands/s {spread([r[3] for r in rs], 0)}")
PY
