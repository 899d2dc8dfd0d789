#!/usr/bin/env bash
# Services the test suite uses: a throwaway PostgreSQL server (benchmark database tests) and
# the Debian packages the suite needs (postgresql; chromium for the report's headless-browser
# test).
#
#   scripts/test_services.sh start       # install what is missing, start PostgreSQL; prints
#                                        #   `export NDCL_TEST_PG_URL=...` (eval it)
#   scripts/test_services.sh stop        # stop the server started by `start`, delete its data
#   scripts/test_services.sh run -- CMD  # start, run CMD with NDCL_TEST_PG_URL exported,
#                                        #   always stop, exit with CMD's status (make test)
#
# The server is initdb'd in a fresh temporary directory, listens on 127.0.0.1 at a free
# non-default port and on a Unix socket in that directory, and runs without durability
# (fsync off): nothing in it outlives `stop`.  PostgreSQL refuses to run as root, so as root
# it runs as the `postgres` user.  Packages are installed only as root with apt-get; otherwise
# a missing server is reported and the PostgreSQL tests skip.  With NDCL_TEST_PG_URL already
# set (a server of your own), nothing is started or stopped.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${NDCL_TEST_SERVICES_STATE:-$REPO/.ndcl/test-services.env}
PG_USER=ndcl
PG_DB=ndcl_test
DRIVER=postgresql+psycopg
# Test data needs no durability; skipping the flushes makes each CREATE DATABASE quick.
FAST="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

say() { echo "test_services: $*" >&2; }

pg_bindir() {
    # $PG_BIN, else the newest Debian server (/usr/lib/postgresql/N/bin), else pg_ctl on PATH
    # (pg_ctl and initdb need their own postgres binary beside them, which the Debian
    # directory guarantees).
    if [[ -n ${PG_BIN:-} ]]; then echo "$PG_BIN"; return; fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/pg_ctl ]]; then echo "$dir"; return; fi
    if command -v pg_ctl >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v pg_ctl)")"; fi
}

have_chromium() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

install_packages() {
    local missing=()
    [[ -n $(pg_bindir) ]] || missing+=(postgresql)
    have_chromium || missing+=(chromium)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]} and cannot install (needs root and apt-get); the tests" \
            "that need them will skip"
        return 0
    fi
    say "installing ${missing[*]} with apt-get (log: /tmp/ndcl-apt.log)"
    local created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # Debian's postgresql package would start its own cluster on port 5432; only the
        # server started below may run.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 install --no-install-recommends)
    # A fresh machine has no package lists yet: update only when the plain install fails.
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/tmp/ndcl-apt.log 2>&1
    then
        DEBIAN_FRONTEND=noninteractive apt-get -q update >>/tmp/ndcl-apt.log 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >>/tmp/ndcl-apt.log 2>&1 \
            || say "apt-get install ${missing[*]} failed (see /tmp/ndcl-apt.log); the tests" \
                   "that need them will skip"
    fi
    if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
}

# Run a server command as the unprivileged owner of the data directory.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_running() {
    # $1: data directory
    [[ -d $1 ]] && as_owner "$BIN/pg_ctl" status -D "$1" >/dev/null 2>&1
}

print_env() {
    echo "export NDCL_TEST_PG_URL='$NDCL_TEST_PG_URL'"
}

start() {
    install_packages
    if [[ -n ${NDCL_TEST_PG_URL:-} ]]; then
        say "NDCL_TEST_PG_URL is set already: using that server, starting none"
        print_env
        return 0
    fi
    BIN=$(pg_bindir)
    if [[ -z $BIN ]]; then
        say "no PostgreSQL server found: PostgreSQL tests will skip" \
            "(install the postgresql package, or set NDCL_TEST_PG_URL)"
        return 0
    fi
    if [[ -f $STATE ]]; then
        # shellcheck disable=SC1090
        . "$STATE"
        if server_running "$PG_DIR/data"; then
            say "already running ($PG_DIR)"
            print_env
            return 0
        fi
        stop  # stale state from an interrupted run
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        say "running as root but there is no postgres user to run the server as" \
            "(it comes with the postgresql package): PostgreSQL tests will skip"
        return 0
    fi
    PG_DIR=$(mktemp -d /tmp/ndcl-pg.XXXXXX)
    local password port
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    port=$(free_port)
    printf '%s\n' "$password" >"$PG_DIR/pwfile"
    if [[ $(id -u) -eq 0 ]]; then chown -R postgres: "$PG_DIR"; fi
    chmod 700 "$PG_DIR"
    NDCL_TEST_PG_URL="$DRIVER://$PG_USER:$password@127.0.0.1:$port/$PG_DB"
    mkdir -p "$(dirname "$STATE")"
    # Written before the server starts, so `stop` finds a half-started one too.
    printf 'PG_DIR=%q\nBIN=%q\nNDCL_TEST_PG_URL=%q\n' "$PG_DIR" "$BIN" "$NDCL_TEST_PG_URL" \
        >"$STATE"
    # Local (socket) connections are trusted: only the owner can reach the 0700 directory.
    # TCP needs the password, as a real server would.
    as_owner "$BIN/initdb" -D "$PG_DIR/data" -U "$PG_USER" --pwfile="$PG_DIR/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        >"$PG_DIR/initdb.log" 2>&1 || { say "initdb failed:"; cat "$PG_DIR/initdb.log" >&2; return 1; }
    rm -f "$PG_DIR/pwfile"
    as_owner "$BIN/pg_ctl" start -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_DIR $FAST" \
        >/dev/null || { say "server did not start:"; cat "$PG_DIR/server.log" >&2; return 1; }
    as_owner "$BIN/createdb" -h "$PG_DIR" -p "$port" -U "$PG_USER" "$PG_DB"
    say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" \
        "(data $PG_DIR/data), database $PG_DB"
    print_env
}

stop() {
    if [[ ! -f $STATE ]]; then
        return 0
    fi
    # shellcheck disable=SC1090
    . "$STATE"
    if server_running "$PG_DIR/data"; then
        if ! as_owner "$BIN/pg_ctl" stop -D "$PG_DIR/data" -m fast -w -t 60 >/dev/null \
            && ! as_owner "$BIN/pg_ctl" stop -D "$PG_DIR/data" -m immediate -w >/dev/null
        then
            say "could not stop the server in $PG_DIR/data (state kept in $STATE)"
            return 1
        fi
        say "PostgreSQL stopped"
    fi
    if [[ $PG_DIR == /tmp/ndcl-pg.* ]]; then rm -rf "$PG_DIR"; fi
    rm -f "$STATE"
    rmdir "$(dirname "$STATE")" 2>/dev/null || true  # .ndcl/ only if nothing else is in it
}

run() {
    [[ ${1:-} == -- ]] && shift
    [[ $# -gt 0 ]] || { say "usage: $0 run -- COMMAND [ARGS...]"; return 2; }
    local own_server=1
    [[ -n ${NDCL_TEST_PG_URL:-} ]] && own_server=0
    if [[ $own_server -eq 1 ]]; then
        # Stop on every way out, including Ctrl-C, and only what this call started.
        trap 'stop' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    start >/dev/null
    if [[ -n ${NDCL_TEST_PG_URL:-} ]]; then export NDCL_TEST_PG_URL; fi
    local status=0
    "$@" || status=$?
    return "$status"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 start|stop|run -- COMMAND" >&2; exit 2 ;;
esac
