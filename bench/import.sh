#!/usr/bin/env bash
# Import beside the store's own durable figure, in the same minutes (issue 27): makes a real
# export whose users' events are interleaved by position as live traffic writes them (the
# fill_file_store example: 64 tasks, each user added then locked/unlocked, 10 events per user
# with its username reservation), then per round runs
#   userstate bench --store file --concurrency 64 --seconds 5 --json       (durable commands/s)
#   userstate import EXPORT --data FRESH --format json                      (timed: events/s)
# and prints one line per figure. Import's time is wall time of the whole command: validation,
# open, appends, close.
#   BIN=target/release/userstate FILL=target/release/examples/fill_file_store \
#     bash bench/import.sh [USERS] [ROUNDS]
set -eu
: "${BIN:?path of the userstate binary}" "${FILL:?path of the fill_file_store example}"
users="${1:-40000}"
rounds="${2:-3}"
scratch="${SCRATCH:-$(mktemp -d)}"
"$FILL" "$scratch/source" "$users" 9 >&2
"$BIN" export --data "$scratch/source" -o "$scratch/export.jsonl"
events=$(wc -l < "$scratch/export.jsonl")
echo "# export: $events events, $(du -h "$scratch/export.jsonl" | cut -f1)"
for round in $(seq 1 "$rounds"); do
  echo "# round $round $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  rm -rf "$scratch/bench"
  "$BIN" bench --store file --data "$scratch/bench" --users 10000 --concurrency 64 --seconds 5 --json \
    | grep '"concurrency"' | sed "s/^/bench /"
  rm -rf "$scratch/target"
  start=$(date +%s.%N)
  "$BIN" import "$scratch/export.jsonl" --data "$scratch/target" --format json > /dev/null
  end=$(date +%s.%N)
  echo "import {\"events\":$events,\"seconds\":$(echo "$end - $start" | bc),\"eventsPerSecond\":$(echo "$events / ($end - $start)" | bc)}"
done
rm -rf "$scratch"
