#!/usr/bin/env bash
# Deterministic cost per query of concord and of HAProxy (tcp mode), each
# alone in front of concord-bench's mock server, for judging a change on a
# shared, noisy machine:
#   - user-space instructions per query: valgrind --tool=callgrind, one run
#     with a fixed workload and one idle run of the same length; the
#     difference over the number of queries (startup, shutdown and the
#     proxy's background work cancel out);
#   - syscalls per query: perf stat -e raw_syscalls:sys_enter on the proxy
#     process (natively) during a fixed workload.
#   bench/cost.sh [queries-per-second] [seconds] [connections]
# Needs a release build (cargo build --release --workspace --bins --examples),
# valgrind, perf and haproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-400}; secs=${2:-6}; conns=${3:-4}
pw=concord-test-pw
bin=target/release
work=$(mktemp -d /tmp/concord-cost.XXXX)
cleanup() { kill $(jobs -p) 2>/dev/null || true; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

mp=$(port)
$bin/concord-bench mock-server --listen 127.0.0.1:$mp >/dev/null 2>&1 &
sleep 0.5

# A proxy's command line, listening on $2 (concord or haproxy).
proxy_cmd() {
  case $1 in
    concord)
      mkdir -p "$work/c$2"
      cat > "$work/c$2/concord.toml" <<EOT
[node]
data_dir = "$work/c$2/data"
[listener]
addr = "127.0.0.1:$2"
[admin]
addr = ""
[http]
addr = ""
[log]
level = "warn"
[monitor]
user = "monitor"
password = "$pw"
[[users]]
name = "app"
password = "$pw"
[[backends]]
name = "db1"
addr = "127.0.0.1:$mp"
role = "primary"
EOT
      echo "$bin/concord --config $work/c$2/concord.toml";;
    haproxy)
      cat > "$work/h$2.cfg" <<EOT
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:$2
  server db1 127.0.0.1:$mp
EOT
      echo "/usr/sbin/haproxy -f $work/h$2.cfg -db";;
  esac
}

wait_port() { for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# Runs the fixed workload against port $1; prints the number of answered queries.
load() {
  $bin/concord-bench run --target 127.0.0.1:$1 --user app --password $pw \
    --connections $conns --rate $rate --duration ${secs}s --warmup 0s --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["queries"])'
}

# Total instructions callgrind counted for the run in $1.
ir() { awk '/^(summary|totals):/{print $2; exit}' "$1"; }

declare -A ipq spq
for p in concord haproxy; do
  # Instructions: under callgrind, with load, then idle for as long.
  for mode in load idle; do
    pp=$(port)
    valgrind --tool=callgrind --callgrind-out-file="$work/$p-$mode.cg" $(proxy_cmd $p $pp) \
      >/dev/null 2>"$work/$p-$mode.vg" &
    vpid=$!
    wait_port $pp
    sleep 2
    if [ $mode = load ]; then q=$(load $pp); echo "$p under callgrind: $q queries" >&2
    else sleep $secs; fi
    kill -TERM $vpid; wait $vpid 2>/dev/null || true
    [ $mode = load ] && queries=$q
  done
  ipq[$p]=$(awk -v a=$(ir "$work/$p-load.cg") -v b=$(ir "$work/$p-idle.cg") -v q=$queries 'BEGIN{printf "%.0f", (a-b)/q}')
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
printf "%-8s %24s %18s\n" proxy "instructions per query" "syscalls per query"
for p in concord haproxy; do
  printf "%-8s %24s %18s\n" $p ${ipq[$p]} ${spq[$p]}
done
