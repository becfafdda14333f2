#!/usr/bin/env bash
# Takeover bench (issue 12, item 3): SIGKILL a worker during a cluster create on PostgreSQL,
# time until another worker resumes the task; median of 10.
#   bash bench/takeover/run.sh [--rounds 10]
# PostgreSQL admin URL: $JEROBOAM_TEST_POSTGRES (default postgresql://postgres@127.0.0.1/postgres).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="$root/.venv/bin/python"; [ -x "$python" ] || python="$(command -v python3)"
exec "$python" "$root/bench/takeover/bench.py" "$@"
