#!/usr/bin/env bash
# The full test suite: unit, property and end-to-end tests against real
# MariaDB servers, real clients (mariadb CLI, sysbench, PyMySQL,
# mysql_async, and through tests/drivers.rs Node.js mysql2 and mariadb, PHP
# mysqli and PDO, MariaDB Connector/J) and real concord processes.
#   scripts/test.sh            everything
#   scripts/test.sh clients    only tests whose name matches
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/driver-deps.sh
cargo build --workspace --bins --examples
# Each end-to-end test runs several server processes: two at a time on
# small machines keeps them from starving each other.
threads="${TEST_THREADS:-2}"
# --no-fail-fast: one failing test binary does not hide the others.
cargo test --workspace --no-fail-fast -- --test-threads="$threads" "$@"
