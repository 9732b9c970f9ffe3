#!/usr/bin/env bash
# QPS and proxy CPU per query of concord with 1, 2, ... worker threads, in
# front of concord-bench's mock server, closed-loop point selects;
# interleaved rounds (concord-bench compare), medians.
#   bench/scaling.sh [threads...]          (default: 1 2)
# Env: SECS (10), ROUNDS (3), CONNS (32), LOAD_THREADS (2: the load
# generator's own threads), WORKLOAD (point-select).
# On a bigger machine, give the load generator its own cores, e.g.
#   LOAD_THREADS=8 CONNS=256 taskset -c 0-7 bench/scaling.sh 1 2 4 8
# with concord pinned to the other cores (CONCORD_CPUS=8-15).
# Needs a release build (cargo build --release --workspace --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- 1 2
secs=${SECS:-10}; rounds=${ROUNDS:-3}; conns=${CONNS:-32}
. bench/lib.sh
bench_setup scaling

mp=$(port)
$bin/concord-bench mock-server --listen 127.0.0.1:$mp >/dev/null 2>&1 &
proxies=()
for t in "$@"; do
  p=$(port)
  mkdir -p "$work/t$t"
  concord_toml "$work/t$t/concord.toml" "$work/t$t" $p 127.0.0.1:$mp $pw "" $t
  if [ -n "${CONCORD_CPUS:-}" ]; then
    taskset -c "$CONCORD_CPUS" $bin/concord --config "$work/t$t/concord.toml" 2>"$work/t$t/log" &
  else
    $bin/concord --config "$work/t$t/concord.toml" 2>"$work/t$t/log" &
  fi
  proxies+=(--proxy "concord-${t}t=127.0.0.1:$p,pid=$!")
  wait_port $p
done
$bin/concord-bench --threads ${LOAD_THREADS:-2} compare --direct 127.0.0.1:$mp \
  --user app --password $pw --workload ${WORKLOAD:-point-select} \
  --connections $conns --duration ${secs}s --rounds $rounds "${proxies[@]}"
