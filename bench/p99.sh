#!/usr/bin/env bash
# Where an HTTP p99 comes from (issue 29, docs/PERFORMANCE.md): `serve` with the file store's
# writer debug log, 4000 users, wrk lock/unlock, then: wrk's percentiles, the server's own
# request histogram (/metrics), the server's minor page faults and the VM's steal time during
# the run, and the file store's batch timings (batches over 5 ms, zero chunks written ahead).
#   bash bench/p99.sh BINARY [SECONDS]
# Environment: STORE=memory (default file), CONNS (64), THREADS (wrk threads, 2),
# PROBE=1 (a second client sends one lock/unlock at a time and lists its stalls over 10 ms:
# bench/probe.py), PERF=1 (`perf record -g` of the server for 4 s from 3 s in; the data stays in
# the printed directory), SERVE_PREFIX / WRK_PREFIX (e.g. "taskset -c 0").
set -euo pipefail
BIN=$1; secs=${2:-10}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d /tmp/p99.XXXXXX); data=$tmp/data
RUST_LOG=${RUST_LOG:-info,userstate::store::file::writer=debug} ${SERVE_PREFIX:-} "$BIN" serve --data "$data" --store ${STORE:-file} --listen 127.0.0.1:0 --log-format json > "$tmp/serve.out" 2> "$tmp/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*' "$tmp/serve.out" | head -1)
export TOKEN=$(cat "$data/admin-token") USERS=4000 THREADS=${THREADS:-2}
seq 0 3999 | xargs -P 16 -I{} curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"userId":"u{}","username":"user{}","organization":{"orgId":"bench"}}' "$base/v2/users/human"
: > "$tmp/serve.log"
flt0=$(awk '{print $10}' /proc/$server/stat)
steal0=$(awk '/^cpu /{print $9}' /proc/stat)
probe=; if [ -n "${PROBE:-}" ]; then python3 bench/probe.py "$base" "$TOKEN" $((secs-1)) > "$tmp/probe.out" & probe=$!; fi
[ -n "${PERF:-}" ] && (sleep 3; timeout 4 perf record -F 2999 -g -o $tmp/perf.data -p $server > /dev/null 2>&1) &
${WRK_PREFIX:-} wrk -t${THREADS} -c${CONNS:-64} -d${secs}s --latency -s bench/wrk/lock_unlock.lua "$base" | tee "$tmp/wrk.out" | grep -E "Latency|Req/Sec|requests in|50%|90%|99%"
curl -s -H "Authorization: Bearer $TOKEN" "$base/metrics" > "$tmp/metrics.txt"
python3 - "$tmp/metrics.txt" <<'PY2'
import re,sys
b={}
for l in open(sys.argv[1]):
    m=re.match(r'userstate_http_request_duration_seconds_bucket\{(.*)\} (\d+)',l)
    if m and 'status="200"' in m.group(1):
        le=re.search(r'le="([^"]+)"',m.group(1)).group(1); b[le]=b.get(le,0)+int(m.group(2))
tot=b.get('+Inf',0)
if tot: print("server-side: " + " ".join(f"<= {k}s: {100*v/tot:.2f}%" for k,v in b.items() if k in ('0.001','0.0025','0.005','0.01','0.025','0.05')))
PY2
echo "minor faults during run: $(( $(awk '{print $10}' /proc/$server/stat) - flt0 ))"; echo "steal during run: $(( $(awk '/^cpu /{print $9}' /proc/stat) - steal0 )) ticks"
[ -n "$probe" ] && wait $probe; sleep 1; cat "$tmp/probe.out" 2>/dev/null
kill $server; wait $server 2>/dev/null || true
python3 - "$tmp/serve.log" <<'PY'
import json,sys
b=[];z=[]
for l in open(sys.argv[1]):
    try: r=json.loads(l)
    except: continue
    f=r.get('fields',{}); m=f.get('message','')
    if m=='batch committed': b.append((f['elapsed_us'],f['requests']))
    elif m.startswith('zeros written'): z.append((f['elapsed_us'],f['to']-f['from']))
b.sort()
n=len(b)
if n:
    q=lambda p: b[min(n-1,int(p*n))][0]
    print(f"batches {n}: elapsed p50 {q(.5)} p90 {q(.9)} p99 {q(.99)} max {b[-1][0]} us; mean requests {sum(x[1] for x in b)/n:.1f}")
    slow=[x for x in b if x[0]>5000]; print(f"batches over 5 ms: {len(slow)} carrying {sum(x[1] for x in slow)} requests of {sum(x[1] for x in b)}")
print("zero chunks:", len(z), "write us/bytes:", z[:12])
PY
echo "logs in $tmp"
