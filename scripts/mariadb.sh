#!/usr/bin/env bash
# Make sure a MariaDB server answers on 127.0.0.1:3306 and print a URL the tests may use to
# create and drop their own databases (named jeroboam_*). Installs and starts it where it is
# missing, and creates the test user through root's socket login.
set -euo pipefail
url=${JEROBOAM_TEST_MARIADB:-mysql://jeroboam:jeroboam-test@127.0.0.1:3306/jeroboam}

answers() { "$JEROBOAM_VENV/bin/python" -c "
import sys, urllib.parse, pymysql
u = urllib.parse.urlsplit(sys.argv[1])
pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username, password=u.password or '',
                database=u.path.lstrip('/'), connect_timeout=3).close()" "$1" 2>/dev/null; }

if answers "$url"; then echo "$url"; exit 0; fi
if ! command -v mariadbd >/dev/null 2>&1; then
  echo "mariadb: installing MariaDB" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null
fi
if ! mariadb-admin ping --silent >/dev/null 2>&1; then
  # No systemd here: the package's init script starts it, else the server binary alone.
  /etc/init.d/mariadb start >&2 || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 30); do
    mariadb-admin ping --silent >/dev/null 2>&1 && break
    sleep 1
  done
fi
# Case-sensitive names as on PostgreSQL: utf8mb4_bin (see README, "MariaDB and MySQL").
mariadb -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS jeroboam CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'jeroboam'@'127.0.0.1' IDENTIFIED BY 'jeroboam-test';
CREATE USER IF NOT EXISTS 'jeroboam'@'localhost' IDENTIFIED BY 'jeroboam-test';
GRANT ALL PRIVILEGES ON `jeroboam%`.* TO 'jeroboam'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `jeroboam%`.* TO 'jeroboam'@'localhost';
SQL
answers "$url" || { echo "mariadb: cannot connect to $url" >&2; exit 1; }
echo "$url"
