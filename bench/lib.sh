# Shared by the bench/ scripts: free ports, waiting for a listener, and the
# one-backend concord and HAProxy configurations they compare.
# Source it after `set -euo pipefail` and `cd` to the repository root,
# then call `bench_setup NAME`.

# bench_setup NAME: the password, binaries and scratch dir every script
# uses; on exit its background processes are killed and the scratch dir
# removed (kept with KEEP=1).
bench_setup() {
  pw=concord-test-pw
  bin=target/release
  work=$(mktemp -d /tmp/concord-$1.XXXX)
  trap bench_cleanup EXIT
}
bench_cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  sleep 0.5
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done
  echo "port $1 never opened" >&2; exit 1
}

# concord_toml FILE DIR LISTEN_PORT BACKEND_ADDR PASSWORD [HTTP_PORT] [WORKER_THREADS]
# One node, user app, one primary backend, admin off, http off unless given,
# its own Raft port (several may run side by side).
concord_toml() {
  local http=""; [ -n "${6:-}" ] && http="127.0.0.1:$6"
  cat > "$1" <<EOT
[cluster]
raft_addr = "127.0.0.1:$(port)"
[node]
data_dir = "$2/data"
worker_threads = ${7:-0}
[listener]
addr = "127.0.0.1:$3"
[admin]
addr = ""
[http]
addr = "$http"
[log]
level = "warn"
[monitor]
user = "monitor"
password = "$5"
[[users]]
name = "app"
password = "$5"
[[backends]]
name = "db1"
addr = "$4"
role = "primary"
EOT
}

# haproxy_cfg FILE LISTEN_PORT BACKEND_ADDR: HAProxy in tcp mode, one server
# (HAPROXY_THREADS sets nbthread; default: one per core).
haproxy_cfg() {
  cat > "$1" <<EOT
global
  maxconn 4096
${HAPROXY_THREADS:+  nbthread $HAPROXY_THREADS}
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:$2
  server db1 $3
EOT
}
