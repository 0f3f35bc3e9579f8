#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the test suite.
#
#   scripts/postgres.sh start DIR PORT   # init (once) + start a cluster in DIR,
#                                        # listening on 127.0.0.1:PORT, and
#                                        # create the database "mailpool_test"
#   scripts/postgres.sh stop DIR         # stop the cluster in DIR (if running)
#
# Afterwards connect with
#   postgresql+psycopg://postgres@127.0.0.1:PORT/mailpool_test   (trust auth)
#
# Everything lives in DIR (data in DIR/data, server log in DIR/log, unix socket
# in DIR); the system's default cluster is never touched. Both commands are
# idempotent: starting a running cluster (same port) or stopping a stopped one
# succeeds. Deleting DIR after `stop` is the caller's job.
#
# Only progress/error messages are printed, all on stderr. Exit codes:
#   0 ok, 1 error, 2 usage, 3 PORT already in use.
#
# As root, the server runs as the "postgres" user (PostgreSQL refuses to run
# as root), DIR is chown'ed to it, and the Debian package "postgresql" is
# installed if no PostgreSQL binaries are found. DIR's parent directories must
# be traversable by "postgres" (e.g. `d=$(mktemp -d) && chmod 755 "$d"`).
# As any other user everything runs as that user.
set -euo pipefail

DBNAME=mailpool_test
SUPERUSER=postgres

say() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage() {
    printf 'usage: %s start DIR PORT | stop DIR\n' "$0" >&2
    exit 2
}

# Run a command as USER (no-op wrapper when we already are USER).
run_as() {
    local user=$1
    shift
    if [[ $(id -un) == "$user" ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$user" -- "$@"
    else
        su "$user" -s /bin/bash -c "$(printf '%q ' "$@")"
    fi
}

# Locate the PostgreSQL server binaries (newest Debian version first); set PGBIN.
find_pgbin() {
    PGBIN=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' \
        -printf '%h\n' 2>/dev/null | sort -V | tail -n 1) || true
    if [[ -z $PGBIN ]] && command -v initdb >/dev/null 2>&1; then
        PGBIN=$(dirname "$(command -v initdb)")
    fi
    if [[ -z $PGBIN ]] && command -v pg_config >/dev/null 2>&1; then
        PGBIN=$(pg_config --bindir)
        [[ -x $PGBIN/initdb ]] || PGBIN=
    fi
    [[ -n $PGBIN ]]
}

# Install PostgreSQL from Debian if missing (root + apt only).
ensure_postgres_installed() {
    find_pgbin && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "PostgreSQL server binaries (initdb, pg_ctl) not found; install them" \
            "(Debian: apt-get install postgresql) or run this script as root"
    fi
    say "installing the Debian package 'postgresql' (one-time)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq postgresql >/dev/null || die "apt-get install postgresql failed"
    find_pgbin || die "postgresql installed but no initdb found under /usr/lib/postgresql"
}

# Is something already bound/listening on 127.0.0.1:PORT?
port_in_use() {
    local port=$1
    if command -v python3 >/dev/null 2>&1; then
        # Bind exactly like the postmaster does (SO_REUSEADDR on 127.0.0.1).
        python3 - "$port" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)  # in use
sys.exit(1)  # free
EOF
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# User that owns/runs the cluster in $D: the data dir's owner if it exists,
# otherwise "postgres" for root and the current user for everyone else.
cluster_user() {
    if [[ -d $D/data ]]; then
        stat -c %U "$D/data"
    elif [[ $EUID -eq 0 ]]; then
        echo postgres
    else
        id -un
    fi
}

# Exit 0 iff the cluster in $D is running.
is_running() {
    [[ -f $D/data/postmaster.pid ]] &&
        run_as "$PGUSER_OS" "$PGBIN/pg_ctl" -D "$D/data" status >/dev/null 2>&1
}

show_log_tail() {
    if [[ -r $D/log ]]; then
        say "last lines of $D/log:"
        tail -n 15 "$D/log" | sed 's/^/    /' >&2
    fi
}

cmd_start() {
    local port=$1
    if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
        die "PORT must be a number between 1 and 65535, got '$port'"
    fi
    port=$((10#$port))

    ensure_postgres_installed

    # Refuse to take over a directory that is not ours (we chown it, and the
    # caller will probably rm -rf it): it must be new, empty, or a previous
    # cluster made by this script.
    if [[ -e $D && ! -d $D ]]; then
        die "$D exists and is not a directory"
    fi
    if [[ -d $D && ! -f $D/data/PG_VERSION ]] && [[ -n $(ls -A "$D") ]]; then
        die "$D is not empty and holds no cluster; pass a new or empty directory"
    fi
    PGUSER_OS=$(cluster_user)

    # Already running? Fine if it is on the requested port. Otherwise the port
    # must be free (checked before touching DIR).
    local running=0 running_port
    if is_running; then
        running_port=$(sed -n 4p "$D/data/postmaster.pid")
        [[ $running_port == "$port" ]] ||
            die "the cluster in $D is already running on port $running_port; stop it first"
        running=1
    elif port_in_use "$port"; then
        say "error: port $port on 127.0.0.1 is already in use; choose another PORT"
        exit 3
    fi

    mkdir -p "$D"
    if [[ $EUID -eq 0 ]]; then
        [[ $PGUSER_OS != root ]] || die "$D/data is owned by root; PostgreSQL cannot run as root"
        getent passwd "$PGUSER_OS" >/dev/null || die "user '$PGUSER_OS' does not exist"
        chown "$PGUSER_OS:" "$D"
        run_as "$PGUSER_OS" test -x "$D" -a -w "$D" ||
            die "user '$PGUSER_OS' cannot reach $D; make its parent directories" \
                "traversable (chmod o+x), e.g. use a 'mktemp -d' dir under /tmp with chmod 755"
    fi

    if ((running)); then
        say "cluster in $D already running on port $port"
    else
        if [[ ! -f $D/data/PG_VERSION ]]; then
            say "initializing cluster in $D/data ($("$PGBIN/postgres" --version))..."
            rm -rf "$D/data"
            if ! run_as "$PGUSER_OS" "$PGBIN/initdb" -D "$D/data" -A trust -U "$SUPERUSER" \
                -E UTF8 --locale=C --no-sync >"$D/initdb.log" 2>&1; then
                sed 's/^/    /' "$D/initdb.log" >&2
                rm -rf "$D/data"
                die "initdb failed"
            fi
            # Test-friendly settings (no durability needed), socket inside $D.
            # The port is passed on the command line so a restart may change it.
            cat >>"$D/data/postgresql.conf" <<EOF

# --- added by scripts/postgres.sh (throwaway test cluster) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '${D//\'/\'\'}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
        fi

        say "starting PostgreSQL on 127.0.0.1:$port (log: $D/log)..."
        local out log_offset=1
        [[ -f $D/log ]] && log_offset=$(($(stat -c %s "$D/log") + 1))
        if ! out=$(run_as "$PGUSER_OS" "$PGBIN/pg_ctl" -D "$D/data" -l "$D/log" \
            -o "-p $port" -w -t 60 start 2>&1); then
            printf '%s\n' "$out" | sed 's/^/    /' >&2
            show_log_tail
            if tail -c "+$log_offset" "$D/log" 2>/dev/null | grep -q 'Address already in use'; then
                say "error: port $port on 127.0.0.1 is already in use; choose another PORT"
                exit 3
            fi
            die "could not start PostgreSQL"
        fi
    fi

    # Create the test database unless it exists (TCP + trust: any OS user works).
    local exists
    exists=$("$PGBIN/psql" -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres -XtAq \
        -c "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'") ||
        die "cannot connect to PostgreSQL on 127.0.0.1:$port"
    if [[ $exists != 1 ]]; then
        "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U "$SUPERUSER" "$DBNAME" ||
            die "createdb $DBNAME failed"
    fi
    say "ready: postgresql://$SUPERUSER@127.0.0.1:$port/$DBNAME"
}

cmd_stop() {
    if [[ ! -f $D/data/PG_VERSION ]]; then
        say "no cluster in $D; nothing to stop"
        return 0
    fi
    find_pgbin || die "PostgreSQL binaries not found"
    PGUSER_OS=$(cluster_user)
    if ! is_running; then
        say "cluster in $D is not running"
        return 0
    fi
    say "stopping PostgreSQL in $D..."
    # Fast shutdown (disconnects clients); escalate to immediate if it hangs.
    if ! run_as "$PGUSER_OS" "$PGBIN/pg_ctl" -D "$D/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
        say "fast shutdown failed/timed out; using immediate shutdown"
        run_as "$PGUSER_OS" "$PGBIN/pg_ctl" -D "$D/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
            die "could not stop PostgreSQL in $D"
    fi
}

[[ $# -ge 2 ]] || usage
action=$1
D=$(realpath -m -- "$2") # absolute path; need not exist yet
# Work from / : the postgres user may not be allowed into the caller's cwd.
cd /
PGBIN=
PGUSER_OS=
case $action in
start)
    [[ $# -eq 3 ]] || usage
    cmd_start "$3"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    cmd_stop
    ;;
*) usage ;;
esac
