#!/usr/bin/env python3
# The disk's own fdatasync tail, without userstate: pwrite over zeros written and synced beforehand
# (in place, as the file store writes) + fdatasync, for SECONDS; prints p50/p90/p99/p99.9/max.
#   python3 bench/fsync-tail.py [FILE] [SECONDS] [RECORDS_PER_SYNC]   (200-byte records)
import os, time, sys
path = sys.argv[1] if len(sys.argv) > 1 else '/tmp/h6-fsync-probe'
secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10
size = 16 << 20; rec = 200 * int(sys.argv[3] if len(sys.argv) > 3 else 1)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
os.write(fd, b'\0' * size); os.fsync(fd)
buf = b'Z' * rec; at = 0; times = []; end = time.time() + secs
while time.time() < end:
    t = time.perf_counter()
    if at + rec > size: at = 0
    os.pwrite(fd, buf, at); at += rec
    os.fdatasync(fd)
    times.append((time.perf_counter() - t) * 1e6)
os.close(fd); os.unlink(path)
times.sort(); n = len(times)
print(f"in-place {rec}B: n={n} p50={times[n//2]:.0f}us p90={times[n*9//10]:.0f}us p99={times[n*99//100]:.0f}us p999={times[n*999//1000]:.0f}us max={times[-1]:.0f}us  over5ms={sum(t>5000 for t in times)/n*100:.2f}%")
