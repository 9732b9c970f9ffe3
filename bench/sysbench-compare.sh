#!/usr/bin/env bash
# sysbench oltp_point_select against MariaDB directly, through concord and
# through HAProxy (tcp mode), interleaved rounds on one machine; prints per
# round QPS, p95 and the proxy's CPU seconds, then medians.
#   bench/sysbench-compare.sh [rounds] [seconds] [threads] [ps-mode]
# ps-mode: disable (text statements, the default) or auto (sysbench's
# prepared statements). CONCORD_THREADS=n sets concord's worker threads
# (default: one per core).
# Needs a release build (cargo build --release --workspace --bins --examples).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; secs=${2:-10}; threads=${3:-16}; ps=${4:-disable}

. bench/lib.sh
bench_setup bench
dbp=$(port); cp=$(port); hp=$(port)
tmpl=$(ls -d target/mariadb-template-v* 2>/dev/null | head -1)
[ -n "$tmpl" ] || { echo "run the tests once first (they build target/mariadb-template-*)"; exit 1; }
cp -a "$tmpl" "$work/data"
user=""; [ "$(id -u)" = 0 ] && user="--user=root"
/usr/sbin/mariadbd --no-defaults --datadir="$work/data" --port=$dbp --bind-address=127.0.0.1 \
  --socket="$work/sock" --log-error="$work/err.log" --innodb-buffer-pool-size=256M \
  --performance-schema=OFF --max-connections=1000 --skip-name-resolve $user &
for _ in $(seq 100); do mariadb --no-defaults -h127.0.0.1 -P$dbp -uroot -p$pw -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done

concord_toml "$work/concord.toml" "$work/concord" $cp 127.0.0.1:$dbp $pw "" "${CONCORD_THREADS:-0}"
target/release/concord --config "$work/concord.toml" 2>"$work/concord.log" &
concord_pid=$!
haproxy_cfg "$work/haproxy.cfg" $hp 127.0.0.1:$dbp
/usr/sbin/haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
haproxy_pid=$!
# URING=1 adds bench/examples/uring_relay.rs, a plain TCP relay on
# io_uring (an experiment: the floor of kernel work per query).
targets="direct concord haproxy"
if [ -n "${URING:-}" ]; then
  up=$(port)
  target/release/examples/uring_relay 127.0.0.1:$up 127.0.0.1:$dbp &
  uring_pid=$!
  targets="$targets uring"
fi
sleep 1

sb() { sysbench oltp_point_select --mysql-host=127.0.0.1 --mysql-port=$1 --mysql-user=app \
  --mysql-password=$pw --mysql-db=test --tables=4 --table-size=100000 "${@:2}"; }
sb $dbp prepare >/dev/null

cpu() { [ -z "$1" ] && { echo 0; return; }; awk '{print $14+$15}' /proc/$1/stat; }
sys() { [ -z "$1" ] && { echo 0; return; }; awk '{print $15}' /proc/$1/stat; }
tck=$(getconf CLK_TCK)
declare -A qps p95 cpus kern
for r in $(seq "$rounds"); do
  for t in $targets; do
    case $t in direct) p=$dbp; pid="";; concord) p=$cp; pid=$concord_pid;; haproxy) p=$hp; pid=$haproxy_pid;; uring) p=$up; pid=$uring_pid;; esac
    c0=$(cpu "$pid"); s0=$(sys "$pid")
    out=$(sb $p --threads=$threads --time=$secs --db-ps-mode=$ps run)
    c1=$(cpu "$pid"); s1=$(sys "$pid")
    q=$(echo "$out" | awk '/queries:/{gsub("\\(","",$3); print $3}')
    l=$(echo "$out" | awk '/95th percentile/{print $3}')
    c=$(awk -v a=$c0 -v b=$c1 -v t=$tck 'BEGIN{printf "%.2f", (b-a)/t}')
    k=$(awk -v a=$s0 -v b=$s1 -v t=$tck 'BEGIN{printf "%.2f", (b-a)/t}')
    echo "round $r $t: qps=$q p95_ms=$l proxy_cpu_s=$c of_which_kernel_s=$k"
    qps[$t]+="$q "; p95[$t]+="$l "; cpus[$t]+="$c "; kern[$t]+="$k "
  done
done
med() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
printf "%-8s %10s %8s %14s %14s %18s\n" target "median qps" "p95 ms" "proxy cpu s" "in kernel s" "queries/cpu-s"
for t in $targets; do
  q=$(med ${qps[$t]}); l=$(med ${p95[$t]}); c=$(med ${cpus[$t]}); k=$(med ${kern[$t]})
  per=$(awk -v q=$q -v c=$c -v s=$secs 'BEGIN{ if (c>0) printf "%.0f", q*s/c; else print "-"}')
  printf "%-8s %10s %8s %14s %14s %18s\n" $t $q $l $c $k $per
done
