#!/usr/bin/env bash
# Shared set-up for the two top-level commands: a virtualenv with Jeroboam installed.
# Sourced, not run: it exports JEROBOAM_VENV and puts the venv first on PATH.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JEROBOAM_VENV=${JEROBOAM_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

# A root `jeroboam serve` or `jeroboam api` runs its API as this user ([DEFAULT] api_user),
# which must be able to run the venv's Python: not one under /root (pyenv's), which only root
# may enter. A venv of such a Python is made again (unless the checkout itself is out of reach).
if [[ $(id -u) -eq 0 ]]; then
  id jeroboam >/dev/null 2>&1 ||
    useradd --system --user-group --home-dir /var/lib/jeroboam --no-create-home --shell /usr/sbin/nologin jeroboam
  runs() { runuser -u jeroboam -- "$1" -c '' 2>/dev/null; }
  runs "$(command -v "$PYTHON" || echo "$PYTHON")" || PYTHON=/usr/bin/python3
  if [[ -x $JEROBOAM_VENV/bin/python ]] && runuser -u jeroboam -- test -x "$JEROBOAM_VENV/bin" &&
      ! runs "$JEROBOAM_VENV/bin/python"; then
    echo "setup: the jeroboam user cannot run $JEROBOAM_VENV's Python; making the venv again with $PYTHON"
    rm -rf "$JEROBOAM_VENV"
  fi
fi
if ! "$PYTHON" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "setup: installing python3 and python3-venv (Python 3.11 or newer is needed)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-dev gcc >/dev/null
fi
if [[ ! -x $JEROBOAM_VENV/bin/python ]]; then
  "$PYTHON" -m venv "$JEROBOAM_VENV"
fi
stamp=$JEROBOAM_VENV/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)-${JEROBOAM_EXTRAS:-}
if [[ ! -e $stamp ]]; then
  "$JEROBOAM_VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$JEROBOAM_VENV/bin/pip" install -q -e "$ROOT${JEROBOAM_EXTRAS:+[$JEROBOAM_EXTRAS]}" 2>&1 \
    | grep -v '^WARNING: Location' || true
  "$JEROBOAM_VENV/bin/python" -c 'import jeroboam.cli.main'
  touch "$stamp"
fi
export JEROBOAM_VENV PATH="$JEROBOAM_VENV/bin:$PATH"
