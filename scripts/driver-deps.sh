#!/usr/bin/env bash
# Installs the client drivers tests/drivers.rs runs against concord and
# MariaDB directly: PHP's mysqlnd (mysqli, PDO) and MariaDB Connector/J from
# Debian's packages, a JDK if missing, and the Node.js drivers mysql2 and
# mariadb from the npm registry (pinned) into target/drivers/node.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v php >/dev/null 2>&1 || need+=(php-cli)
php -m 2>/dev/null | grep -qx mysqli || need+=(php-mysql)
[ -e /usr/share/java/mariadb-java-client.jar ] || need+=(libmariadb-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

node_dir=target/drivers/node
if [ ! -e "$node_dir/node_modules/mysql2" ] || [ ! -e "$node_dir/node_modules/mariadb" ]; then
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" mysql2@3.26.1 mariadb@3.5.4 >/dev/null
fi
