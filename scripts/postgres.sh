#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the tests, and exports
# WEFT_TEST_POSTGRES_URL. Sourced by scripts/test.sh.
#
# - WEFT_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test)
#   is used if something answers there.
# - Otherwise a throwaway cluster is started under target/pg-test with
#   Debian's initdb/pg_ctl (the `postgresql` package is installed first when
#   this runs as root with apt-get), and the URL points at it.
# - Otherwise it fails and says what to install. It never skips.

WEFT_TEST_POSTGRES_URL="${WEFT_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

pg_answers() {
    if command -v psql >/dev/null; then
        psql "$1" -qAtc 'SELECT 1' >/dev/null 2>&1
    else
        # host:port from the URL; without psql, an open port will do.
        local hostport="${1#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
        (exec 3<>"/dev/tcp/${hostport%%:*}/${hostport##*:}") 2>/dev/null
    fi
}

pg_bin() {
    if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
        dirname "$(command -v pg_ctl)"
        return
    fi
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [ -n "$d" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

start_throwaway_postgres() {
    local bin dir port=55432 as=()
    bin="$(pg_bin)"
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "PostgreSQL is not installed: installing the postgresql package" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
        bin="$(pg_bin)"
    fi
    if [ -z "$bin" ]; then
        echo "error: no PostgreSQL answers at $WEFT_TEST_POSTGRES_URL and none is installed here;" \
            "install PostgreSQL 15 or later (Debian: apt-get install postgresql)" \
            "or set WEFT_TEST_POSTGRES_URL to a server the tests may create databases on" >&2
        return 1
    fi
    dir="$PWD/target/pg-test"
    # initdb refuses to run as root: use the postgres user the package made.
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        as=(runuser -u postgres --)
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres "$dir"
        "${as[@]}" "$bin/initdb" -D "$dir" -A trust -U postgres >"$PWD/target/pg-test.initdb.log" 2>&1 \
            || { cat "$PWD/target/pg-test.initdb.log" >&2; return 1; }
    fi
    "${as[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >&2 \
        || { cat "$dir/server.log" >&2; return 1; }
    WEFT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    pg_answers "$WEFT_TEST_POSTGRES_URL" || return 1
    echo "started a throwaway PostgreSQL at $WEFT_TEST_POSTGRES_URL (stop: $bin/pg_ctl -D $dir stop)" >&2
}

if ! pg_answers "$WEFT_TEST_POSTGRES_URL"; then
    echo "no PostgreSQL answers at $WEFT_TEST_POSTGRES_URL" >&2
    start_throwaway_postgres || exit 1
fi
export WEFT_TEST_POSTGRES_URL
