#!/usr/bin/env bash
# Resident memory of a concord node under sustained full load with nobody
# scraping /metrics: concord in front of concord-bench's mock server,
# closed-loop point selects (text and prepared connections side by side),
# RSS read from /proc every 10 s.
#   bench/rss.sh [seconds] [connections]      (default 600 s, 16)
# Prints one CSV line per sample (seconds, queries so far, RSS KiB) and a
# summary. Needs a release build (cargo build --release --workspace --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}; conns=${2:-16}
. bench/lib.sh
bench_setup rss

mp=$(port); cp=$(port); hp=$(port)
$bin/concord-bench mock-server --listen 127.0.0.1:$mp >/dev/null 2>&1 &
concord_toml "$work/concord.toml" "$work" $cp 127.0.0.1:$mp $pw $hp
$bin/concord --config "$work/concord.toml" >"$work/concord.log" 2>&1 &
cpid=$!
wait_port $cp
half=$((conns / 2))
loads=()
for w in point-select point-select-ps; do
  $bin/concord-bench run --target 127.0.0.1:$cp --user app --password $pw \
    --workload $w --connections $half --duration ${secs}s --warmup 0s --json \
    > "$work/$w.json" 2>/dev/null &
  loads+=($!)
done
rss() { awk '/^VmRSS/{print $2}' /proc/$cpid/status; }
start=$(date +%s)
{
  echo "seconds,rss_kib"
  for i in $(seq 0 10 "$secs"); do
    sleep $(( start + i - $(date +%s) > 0 ? start + i - $(date +%s) : 0 ))
    echo "$i,$(rss)"
  done
} | tee "$work/rss.csv"
wait "${loads[@]}"
q=0
for w in point-select point-select-ps; do
  q=$((q + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["queries"])' "$work/$w.json")))
done
python3 - "$work/rss.csv" "$q" "$secs" <<'PY'
import sys, csv
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
q, secs = int(sys.argv[2]), int(sys.argv[3])
kib = [int(r["rss_kib"]) for r in rows]
first = next((int(r["rss_kib"]) for r in rows if int(r["seconds"]) >= 60), kib[0])
print(f"{q} queries in {secs} s ({q/secs:.0f} qps); RSS {kib[0]} KiB at 0 s, {first} KiB at 60 s, "
      f"{kib[-1]} KiB at the end, max {max(kib)} KiB; growth after the first minute "
      f"{kib[-1]-first} KiB ({(kib[-1]-first)*1024/max(q,1):.4f} bytes per query)")
PY
