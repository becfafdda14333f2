#!/usr/bin/env bash
# Jeroboam API bench (issue 2, item 9): SQLite, then PostgreSQL; wrk as the load generator.
#   bash bench/api/run.sh [--duration 6] [--only sqlite|postgres] [--json FILE] [--strict]
# PostgreSQL admin URL: $JEROBOAM_TEST_POSTGRES (default postgresql://postgres@127.0.0.1/postgres).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v wrk >/dev/null 2>&1; then
    echo "[bench] wrk is missing; installing the Debian package wrk" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q wrk || { $sudo apt-get update -q && $sudo apt-get install -y -q wrk; }
fi

python="$root/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
exec "$python" "$here/bench.py" "$@"
