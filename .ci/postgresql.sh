# Sourced by .ci/run: make a PostgreSQL server answer on loopback and export
# TRACKER_TEST_PG_URL for the test suite. A server already on 127.0.0.1:$PORT is used as it is;
# otherwise PostgreSQL is installed from the distribution's packages and a private cluster
# (trust auth, loopback only) is started in $TRACKER_CI_PG_DIR.

PORT="${TRACKER_CI_PG_PORT:-5432}"
PG_DIR="${TRACKER_CI_PG_DIR:-/tmp/tracker-ci-postgresql-$PORT}"

_pg_answers() {
    python3 - "$PORT" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_pg_bin() {
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$found" ] && echo "$found"
}

_as_owner() {
    # initdb and the server refuse to run as root: root runs them as the `postgres` user.
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_start_private_cluster() {
    if [ -z "$(_pg_bin)" ]; then
        echo "ci: installing PostgreSQL from the distribution's packages" >&2
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local bin
    bin="$(_pg_bin)"
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_DIR"; fi
    if [ ! -f "$PG_DIR/PG_VERSION" ]; then
        _as_owner "$bin/initdb" -D "$PG_DIR" -U postgres -A trust >/dev/null
    fi
    _as_owner "$bin/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PG_DIR" start >/dev/null
    echo "ci: started PostgreSQL on 127.0.0.1:$PORT (data in $PG_DIR)" >&2
}

if [ -z "${TRACKER_TEST_PG_URL:-}" ]; then
    if _pg_answers; then
        echo "ci: using the PostgreSQL server on 127.0.0.1:$PORT" >&2
    else
        _start_private_cluster
    fi
    export TRACKER_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
fi
