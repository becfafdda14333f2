#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 and print a URL the tests may use
# to create and drop their own databases. Installs and starts it where it is missing.
set -euo pipefail
url=${JEROBOAM_TEST_POSTGRES:-postgresql://postgres@127.0.0.1:5432/postgres}

answers() { "$JEROBOAM_VENV/bin/python" -c "import psycopg, sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$1" 2>/dev/null; }

if answers "$url"; then echo "$url"; exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: installing PostgreSQL" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 && break
  sleep 1
done
if answers "$url"; then echo "$url"; exit 0; fi
# A stock Debian install wants a password over TCP: give the test user one.
su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'jeroboam-test'\"" >&2
url=postgresql://postgres:jeroboam-test@127.0.0.1:5432/postgres
answers "$url" || { echo "postgres: cannot connect to $url" >&2; exit 1; }
echo "$url"
