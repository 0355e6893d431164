#!/usr/bin/env bash
# Functions to run a throwaway PostgreSQL cluster on 127.0.0.1 for the tests.
# start_test_postgres: installs Debian's server package when root and absent, initialises a
# cluster in a temp folder (trust auth, loopback only), starts it, creates the `mvlab_test`
# database and exports MVLAB_TEST_POSTGRES_URL. stop_test_postgres stops it and removes the folder.

_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

_pg_as() {  # run a command as the cluster's owner: initdb refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_test_postgres() {
  local bin
  if ! bin=$(_pg_bin); then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    echo "scripts/test.sh: installing Debian's postgresql package for the storage tests" >&2
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; }) || return 1
    bin=$(_pg_bin) || return 1
  fi
  MVLAB_PG_DIR=$(mktemp -d /tmp/mvlab-pg.XXXXXX)
  chmod 755 "$MVLAB_PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$MVLAB_PG_DIR"
  local port=$(( 20000 + RANDOM % 20000 ))
  _pg_as "$bin/initdb" -D "$MVLAB_PG_DIR/data" --auth=trust -U postgres >/dev/null || return 1
  _pg_as "$bin/pg_ctl" -D "$MVLAB_PG_DIR/data" -l "$MVLAB_PG_DIR/log" -w \
    -o "-p $port -k $MVLAB_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
    start >/dev/null || { cat "$MVLAB_PG_DIR/log" >&2; return 1; }
  _pg_as "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres mvlab_test || return 1
  MVLAB_PG_BIN=$bin
  export MVLAB_PG_DIR MVLAB_PG_BIN
  export MVLAB_TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$port/mvlab_test"
  echo "scripts/test.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

stop_test_postgres() {
  [ -n "${MVLAB_PG_DIR:-}" ] || return 0
  _pg_as "$MVLAB_PG_BIN/pg_ctl" -D "$MVLAB_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$MVLAB_PG_DIR"
}
