#!/usr/bin/env bash
# HTTP load on `userstate serve`: lock/unlock over keep-alive connections with wrk.
#   bash bench/wrk/run.sh [file|memory] [USERS] [CONNECTIONS] [SECONDS]
# USERS (default 4000) must be far more than CONNECTIONS: a user gets its next request only
# after a whole round over the wrk thread's users, and a request stalled longer than a round
# (a VM pause) would otherwise meet the next request on the same user and fail.
# THREADS=N sets wrk's threads (default 2). Needs wrk (Debian: apt-get install wrk) and curl. Loopback only; stops the server at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
store=${1:-file}; users=${2:-4000}; conns=${3:-64}; secs=${4:-10}; threads=${THREADS:-2}
tmp=$(mktemp -d /tmp/userstate-wrk.XXXXXX); data=$tmp/data
# BIN=path/to/userstate compares another build (e.g. alternating two binaries); default: build.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p userstate-cli --bin userstate
  BIN=${CARGO_TARGET_DIR:-target}/release/userstate
fi
"$BIN" serve --data "$data" --store "$store" --listen 127.0.0.1:0 \
  --log-format json > "$tmp/serve.out" 2> "$tmp/serve.log" &
server=$!
# The server's exit status must not become this script's (under `set -e` a failed `wait` in the
# trap would, and `bench/ab-all.sh` would stop before its summary): say it, and go on.
trap 'kill $server 2>/dev/null; st=0; wait $server 2>/dev/null || st=$?
  [ "$st" = 0 ] || echo "note: the server exited with status $st" >&2; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*' "$tmp/serve.out" | head -1)
export TOKEN=$(cat "$data/admin-token") USERS=$users THREADS=$threads
seq 0 $((users - 1)) | xargs -P 16 -I{} curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"userId":"u{}","username":"user{}","organization":{"orgId":"bench"}}' "$base/v2/users/human"
echo "store=$store users=$users connections=$conns threads=$threads seconds=$secs nproc=$(nproc)"
# wrk and the server share the machine: print the CPU each used and the time the hypervisor
# took from this VM ("steal", /proc/stat), to read the figure beside them.
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
steal() { awk '/^cpu /{print $9}' /proc/stat; }
server0=$(cpu); steal0=$(steal); tick=$(getconf CLK_TCK)
wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s bench/wrk/lock_unlock.lua "$base" \
  | tee "$tmp/wrk.out"
requests=$(awk '/requests in/{print $1}' "$tmp/wrk.out")
awk -v s="$(( $(cpu) - server0 ))" -v st="$(( $(steal) - steal0 ))" -v t="$tick" -v n="$requests" \
  'BEGIN { printf "server CPU %.1f s (%.1f us per request); steal %.2f s\n", s/t, 1e6*s/t/n, st/t }'
