#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (as root): installs what it needs,
# starts PostgreSQL and MariaDB where they are not running, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/host-prereqs.sh
bash scripts/build-kubernetes.sh   # the kubernetes driver's binaries (cached after the first run)
bash scripts/build-vm-images.sh >/dev/null   # the vm provider's node images (cached likewise)
JEROBOAM_EXTRAS=test source scripts/setup.sh
JEROBOAM_TEST_POSTGRES=$(bash scripts/postgres.sh)
JEROBOAM_TEST_MARIADB=$(bash scripts/mariadb.sh)
export JEROBOAM_TEST_POSTGRES JEROBOAM_TEST_MARIADB
set +e
python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
# pytest's 5 means no test ran: that is a failure here, not a pass.
exit $status
