#!/usr/bin/env bash
# Soak (issue 12, "done when"): on PostgreSQL, 1 API and 2 workers; swarm clusters of the local
# provider created, resized and deleted for N minutes while workers are SIGKILLed at random
# moments and replaced; then checks and figures. As root.
#   bash bench/soak/run.sh [--minutes 7] [--kills 20] [--actors 3] [--seed N]
# PostgreSQL: $JEROBOAM_TEST_POSTGRES, else the server scripts/postgres.sh starts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bash "$root/scripts/host-prereqs.sh"
JEROBOAM_EXTRAS=test source "$root/scripts/setup.sh"   # the tests' helpers (httpx)
JEROBOAM_TEST_POSTGRES=${JEROBOAM_TEST_POSTGRES:-$(bash "$root/scripts/postgres.sh")}
export JEROBOAM_TEST_POSTGRES
exec "$JEROBOAM_VENV/bin/python" "$here/bench.py" "$@"
