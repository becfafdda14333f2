#!/usr/bin/env bash
# Orchestration engine bench (issue 3, item 8): SQLite, then PostgreSQL.
#   bash bench/orchestration/run.sh [--runs 3] [--only sqlite|postgres] [--json FILE]
# PostgreSQL admin URL: $JEROBOAM_TEST_POSTGRES (default postgresql://postgres@127.0.0.1/postgres).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
exec "$python" "$here/bench.py" "$@"
