# Beside a load (bench/p99.sh PROBE=1): one keep-alive connection sending one lock/unlock at a
# time; prints its percentiles and every answer slower than 10 ms with its time into the run.
#   python3 bench/probe.py http://HOST:PORT TOKEN SECONDS
import http.client, json, sys, time, os
base=sys.argv[1].replace('http://',''); token=sys.argv[2]; secs=float(sys.argv[3])
h,p=base.split(':'); c=http.client.HTTPConnection(h,int(p))
H={'Authorization':'Bearer '+token,'Content-Type':'application/json'}
c.request('POST','/v2/users/human',json.dumps({"userId":"probe","username":"probe","organization":{"orgId":"bench"}}),H); c.getresponse().read()
t0=time.time(); lat=[]; verb=['lock','unlock']; i=0; stalls=[]
while time.time()-t0<secs:
    s=time.perf_counter(); c.request('POST',f'/v2/users/probe/{verb[i%2]}','{}',H); r=c.getresponse(); r.read(); e=(time.perf_counter()-s)*1e3
    lat.append(e); i+=1
    if e>10: stalls.append((round(time.time()-t0,3),round(e,1)))
lat.sort(); n=len(lat)
print(f"probe: n={n} p50={lat[n//2]:.2f}ms p90={lat[n*9//10]:.2f} p99={lat[n*99//100]:.2f} max={lat[-1]:.1f}; stalls>10ms: {len(stalls)}")
print("stall times (s, ms):", stalls[:60])
