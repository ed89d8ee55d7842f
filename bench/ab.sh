#!/usr/bin/env bash
# Alternates two userstate binaries on the same workloads, so a change is compared with its base
# in the same minutes (the disk and the load vary up to 2.5x between runs, docs/PERFORMANCE.md).
#   BASE=path/to/old/userstate AFTER=target/release/userstate bash bench/ab.sh [ROUNDS]
# Per round and binary: memory, file (fresh DIR) and PostgreSQL (fresh database `benchpg` on
# 127.0.0.1:5432), 64 callers, 10,000 users, 5 s; one JSON line per run, prefixed "NAME STORE".
set -u
: "${BASE:?path of the base binary}" "${AFTER:?path of the binary under test}"
rounds="${1:-3}"
scratch="${SCRATCH:-$(mktemp -d)}"
for round in $(seq 1 "$rounds"); do
  for name in base after; do
    bin=$BASE; [ "$name" = after ] && bin=$AFTER
    echo "# round $round $name $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
    "$bin" bench --store memory --users 10000 --concurrency 64 --seconds 5 --json | sed "s/^/$name memory /"
    rm -rf "$scratch/file"
    "$bin" bench --store file --data "$scratch/file" --users 10000 --concurrency 64 --seconds 5 --json | sed "s/^/$name file /"
    dropdb --if-exists -h 127.0.0.1 -U postgres benchpg && createdb -h 127.0.0.1 -U postgres benchpg
    "$bin" bench --store postgres://postgres@127.0.0.1:5432/benchpg --users 10000 --concurrency 64 --seconds 5 --json | sed "s/^/$name pg /"
  done
done
