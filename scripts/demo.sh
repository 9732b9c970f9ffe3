#!/usr/bin/env bash
# Quick-start demo: local MariaDB primary + 2 replicas, concord in front,
# and a live workload you can watch. Ctrl-C stops and cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --workspace --bins --examples
exec target/release/examples/demo
