#!/usr/bin/env bash
# Syscalls and user-space instructions per query of concord and of HAProxy
# (tcp mode), each alone in front of concord-bench's mock server, at fixed
# open-loop rates: counts that do not depend on how busy the shared
# machine is.
#   - syscalls per query: perf stat -e raw_syscalls:sys_enter on the proxy
#     process during the workload, over the queries answered.
#   - instructions per query: the proxy runs under valgrind's callgrind;
#     counters are zeroed, a load runs, they are dumped. Two loads of the
#     same length at two rates: the slope (instructions difference over
#     queries difference) is the per-query cost, with background work
#     (probes, Raft ticks, timers) cancelled out. The workload itself is
#     the same for both proxies; the mock server and the load generator
#     run natively.
#   bench/cost.sh [queries-per-second] [seconds] [connections]
# PROXIES="concord" measures one of them only.
# Needs a release build (cargo build --release --workspace --bins --examples),
# perf, valgrind and haproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-400}; secs=${2:-6}; conns=${3:-4}
. bench/lib.sh
bench_setup cost

mp=$(port)
$bin/concord-bench mock-server --listen 127.0.0.1:$mp >/dev/null 2>&1 &
sleep 0.5

# A proxy's command line, listening on $2 (concord or haproxy).
proxy_cmd() {
  case $1 in
    concord)
      mkdir -p "$work/c$2"
      concord_toml "$work/c$2/concord.toml" "$work/c$2" $2 127.0.0.1:$mp $pw
      echo "$bin/concord --config $work/c$2/concord.toml";;
    haproxy)
      haproxy_cfg "$work/h$2.cfg" $2 127.0.0.1:$mp
      echo "/usr/sbin/haproxy -f $work/h$2.cfg -db";;
  esac
}

# Runs the fixed workload against port $1; prints the number of answered queries.
load() {
  $bin/concord-bench run --target 127.0.0.1:$1 --user app --password $pw \
    --connections $conns --rate $rate --duration ${secs}s --warmup 0s --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["queries"])'
}

declare -A spq ipq
for p in ${PROXIES:-concord haproxy}; do
  # Instructions, under callgrind (slow: low rates).
  pp=$(port)
  valgrind --tool=callgrind --callgrind-out-file="$work/$p.cg" $(proxy_cmd $p $pp) >"$work/$p.vg" 2>&1 &
  vpid=$!
  wait_port $pp
  sleep 2
  rate=100 secs=1 load $pp >/dev/null # connections, first statements: warm
  declare -A inst=() qs=()
  for r in 100 500; do
    callgrind_control -z $vpid >/dev/null
    qs[$r]=$(rate=$r secs=3 load $pp)
    callgrind_control -d $vpid >/dev/null
    inst[$r]=$(grep -h '^totals:' $(ls -t "$work/$p.cg".* | head -1) | awk '{print $2}')
  done
  kill -KILL $vpid; wait $vpid 2>/dev/null || true
  ipq[$p]=$(awk -v a=${inst[100]} -v b=${inst[500]} -v qa=${qs[100]} -v qb=${qs[500]} 'BEGIN{printf "%.0f", (b-a)/(qb-qa)}')
  echo "$p under callgrind: ${qs[100]} queries ${inst[100]} instructions, ${qs[500]} queries ${inst[500]} instructions" >&2

  # Syscalls, natively.
  pp=$(port)
  $(proxy_cmd $p $pp) >/dev/null 2>&1 &
  ppid=$!
  wait_port $pp
  sleep 1
  perf stat -e raw_syscalls:sys_enter -x, -o "$work/$p.perf" -p $ppid -- sleep $((secs + 1)) &
  perfpid=$!
  sleep 0.5
  q=$(load $pp)
  wait $perfpid || true
  kill -TERM $ppid; wait $ppid 2>/dev/null || true
  n=$(awk -F, '/raw_syscalls:sys_enter/{print $1}' "$work/$p.perf")
  spq[$p]=$(awk -v n=$n -v q=$q 'BEGIN{printf "%.2f", n/q}')
  echo "$p natively: $q queries, $n syscalls" >&2
done
echo
printf "%-8s %18s %22s\n" proxy "syscalls per query" "instructions per query"
for p in ${PROXIES:-concord haproxy}; do
  printf "%-8s %18s %22s\n" $p ${spq[$p]} ${ipq[$p]}
done
