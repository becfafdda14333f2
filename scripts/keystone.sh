#!/usr/bin/env bash
# A real Keystone for the tests, from PyPI, in a virtualenv of its own (its pins must not
# meet Jeroboam's): SQLite, fernet tokens, the public WSGI application under gunicorn.
#
#   keystone.sh install              create or reuse the venv; prints its path
#   keystone.sh init DIR PORT [EXP]  keystone.conf in DIR (token expiration EXP seconds, default 3600),
#                                    db_sync, fernet and credential keys, bootstrap (admin/$KEYSTONE_ADMIN_PASSWORD)
#   keystone.sh serve DIR PORT       run it on 127.0.0.1:PORT in the foreground (exec: the PID is gunicorn's)
#
# The venv lives outside the clone (a CI run starts from a fresh clone), keyed by the version.
set -euo pipefail
KEYSTONE_VERSION=30.0.0
VENV=${JEROBOAM_KEYSTONE_VENV:-/var/cache/jeroboam/keystone-$KEYSTONE_VERSION}
PYTHON=${PYTHON:-python3}

install() {
  if [[ ! -e $VENV/.installed ]]; then
    mkdir -p "$(dirname "$VENV")"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "keystone==$KEYSTONE_VERSION" gunicorn 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$VENV/bin/python" -W ignore -c 'import keystone.server.wsgi' && touch "$VENV/.installed"
  fi
  echo "$VENV"
}

init() {
  local dir=$1 port=$2 expiration=${3:-3600}
  mkdir -p "$dir"
  cat >"$dir/keystone.conf" <<EOF
[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///$dir/keystone.sqlite
[identity]
# The fewest bcrypt rounds: a test Keystone need not slow down password guessing.
password_hash_rounds = 4
[token]
provider = fernet
expiration = $expiration
[fernet_tokens]
key_repository = $dir/fernet-keys
[credential]
key_repository = $dir/credential-keys
EOF
  local manage=("$VENV/bin/keystone-manage" --config-file "$dir/keystone.conf")
  "${manage[@]}" db_sync
  "${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  "${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  "${manage[@]}" bootstrap --bootstrap-password "${KEYSTONE_ADMIN_PASSWORD:?}" --bootstrap-region-id RegionOne \
    --bootstrap-public-url "http://127.0.0.1:$port/v3" --bootstrap-internal-url "http://127.0.0.1:$port/v3"
}

serve() {
  local dir=$1 port=$2
  export OS_KEYSTONE_CONFIG_FILES=$dir/keystone.conf
  # Keystone's oslo.config parses sys.argv, where gunicorn's own options would make it exit.
  cat >"$dir/keystone_public.py" <<'PY'
import sys

sys.argv = sys.argv[:1]
from keystone.server.wsgi import initialize_public_application  # noqa: E402

application = initialize_public_application()
PY
  exec "$VENV/bin/gunicorn" --bind "127.0.0.1:$port" --workers 1 --threads 4 --timeout 60 --graceful-timeout 5 \
    --chdir "$dir" --error-logfile - keystone_public:application
}

command=${1:?usage: keystone.sh install|init DIR PORT [EXPIRATION]|serve DIR PORT}
shift
case $command in
  install) install ;;
  init) init "$@" >&2 ;;
  serve) serve "$@" ;;
  *) echo "keystone.sh: unknown command $command" >&2; exit 2 ;;
esac
