#!/bin/bash
# PostgreSQL: a private cluster in $STRATUS_DATA/postgres owned by the postgres user, listening on
# $STRATUS_BIND:$STRATUS_PG_PORT with its Unix socket in $STRATUS_RUN/postgres (so it never collides with
# a distribution cluster on /var/run/postgresql); the services use the socket. Sourced after common.sh.

PG_DATA=${PG_DATA:-$STRATUS_DATA/postgres}
PG_SOCKET_DIR=${PG_SOCKET_DIR:-$STRATUS_RUN/postgres}
PG_LOG=${PG_LOG:-$STRATUS_LOGS/postgres.log}

# The newest installed server version's bin directory.
pg_bindir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
    { [ -n "$d" ] && [ -x "$d/postgres" ]; } || die "no PostgreSQL server under /usr/lib/postgresql (install postgresql)"
    echo "$d"
}

pg_as_postgres() { runuser -u postgres -- "$@"; }

pg_psql() {
    pg_as_postgres "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$STRATUS_PG_PORT" \
        -d postgres "$@"
}

pg_running() {
    [ -f "$PG_DATA/PG_VERSION" ] && pg_as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_ready() {
    pg_as_postgres "$(pg_bindir)/pg_isready" -q -h "$PG_SOCKET_DIR" -p "$STRATUS_PG_PORT" 2>/dev/null
}

# initdb once; the settings file is rewritten every time so a changed port takes effect.
init_postgres() {
    local bindir
    bindir=$(pg_bindir)
    getent passwd postgres >/dev/null || die "no postgres user (install postgresql)"
    mkdir -p "$PG_SOCKET_DIR"
    chown postgres:postgres "$PG_SOCKET_DIR"
    touch "$PG_LOG"
    chown postgres:postgres "$PG_LOG"
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        log "initdb $PG_DATA"
        mkdir -p "$PG_DATA"
        chown postgres:postgres "$PG_DATA"
        chmod 700 "$PG_DATA"
        pg_as_postgres "$bindir/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 >"$STRATUS_LOGS/postgres-initdb.log" 2>&1 ||
            die "initdb failed: see $STRATUS_LOGS/postgres-initdb.log"
    fi
    # Included from postgresql.conf (include_if_exists is appended once).
    cat >"$PG_DATA/stratus.conf" <<EOF
# Written by devstack/lib/postgres.sh on every stack.sh run.
listen_addresses = '$STRATUS_BIND'
port = $STRATUS_PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 300
shared_buffers = 128MB
# A development cloud: a crash may lose the last few hundred ms of commits, never consistency.
synchronous_commit = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
EOF
    chown postgres:postgres "$PG_DATA/stratus.conf"
    grep -q "^include_if_exists = 'stratus.conf'" "$PG_DATA/postgresql.conf" ||
        echo "include_if_exists = 'stratus.conf'" >>"$PG_DATA/postgresql.conf"
    # The services connect over the Unix socket (about 2/3 of the CPU per round trip of TCP loopback) with the
    # role's password; initdb's rule for local connections is peer, so a rule for that role goes first.
    local rule="local all $STRATUS_DB_USER scram-sha-256"
    grep -qxF "$rule" "$PG_DATA/pg_hba.conf" || sed -i "1i $rule" "$PG_DATA/pg_hba.conf"
}

# The DSN the services use: the Unix socket, with the role's password ($1).
pg_dsn() {
    echo "postgresql://$STRATUS_DB_USER:$1@/$STRATUS_DB_NAME?host=$PG_SOCKET_DIR&port=$STRATUS_PG_PORT"
}

start_postgres() {
    init_postgres
    if pg_running; then
        log "PostgreSQL already running ($PG_DATA)"
    elif have_systemd; then
        systemctl reset-failed stratus-postgres >/dev/null 2>&1 || true
        # postgres in the foreground as the unit's main process; SIGINT is its "fast" shutdown.
        systemd-run --quiet --unit=stratus-postgres --description="Stratus PostgreSQL" --uid=postgres \
            -p KillSignal=SIGINT -p KillMode=mixed -p TimeoutStopSec=60 \
            -p StandardOutput="append:$PG_LOG" -p StandardError="append:$PG_LOG" \
            -- "$(pg_bindir)/postgres" -D "$PG_DATA"
    else
        pg_as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null 9>&- ||
            die "PostgreSQL did not start: $(tail -n 20 "$PG_LOG")"
    fi
    wait_for "PostgreSQL" 60 pg_ready || die "PostgreSQL not ready: $(tail -n 20 "$PG_LOG")"
    configure_postgres
}

# Role and database for Stratus (idempotent; resets the password to the configured one). CREATEDB lets the
# functional tests make a scratch database per run.
configure_postgres() {
    local user=$STRATUS_DB_USER pass=$STRATUS_DB_PASSWORD db=$STRATUS_DB_NAME
    pg_psql -v user="$user" -v pass="$pass" <<'EOF'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'pass')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'user', :'pass') \gexec
EOF
    pg_psql -v user="$user" -v db="$db" <<'EOF'
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'db', :'user', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
EOF
    pg_psql -c 'SELECT pg_reload_conf()' >/dev/null # a server already running takes pg_hba.conf's new rule
}

stop_postgres() {
    if have_systemd && systemctl is-active --quiet stratus-postgres 2>/dev/null; then
        log "stopping stratus-postgres"
        systemctl stop stratus-postgres || true
    elif pg_running; then
        log "stopping PostgreSQL ($PG_DATA)"
        pg_as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
            warn "pg_ctl stop failed"
    fi
}
