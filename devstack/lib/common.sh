#!/bin/bash
# Shared settings and helpers for stack.sh / unstack.sh. Sourced, never run.
#
# Every setting is an environment variable with a default; stack.sh records the values it used in
# $STRATUS_RUN/stack.env so that unstack.sh (and a re-run) act on the same cloud.
# shellcheck disable=SC2034 # variables here are used by the files that source this one

# --- layout -------------------------------------------------------------------------------------------
STRATUS_BASE=${STRATUS_BASE:-/opt/stratus}
STRATUS_DATA=${STRATUS_DATA:-$STRATUS_BASE/data}
STRATUS_LOGS=${STRATUS_LOGS:-$STRATUS_BASE/logs}
STRATUS_RUN=${STRATUS_RUN:-$STRATUS_BASE/run}
STRATUS_VENV=${STRATUS_VENV:-$STRATUS_BASE/venv}
STRATUS_OPENRC=${STRATUS_OPENRC:-$STRATUS_BASE/openrc}
STRATUS_CONF_DIR=${STRATUS_CONF_DIR:-/etc/stratus}
STRATUS_CONF=${STRATUS_CONF:-$STRATUS_CONF_DIR/stratus.conf}
STRATUS_CLOUDS_YAML=${STRATUS_CLOUDS_YAML:-/etc/openstack/clouds.yaml}
STRATUS_PYTHON=${STRATUS_PYTHON:-/usr/bin/python3}

# --- topology -----------------------------------------------------------------------------------------
# STRATUS_HA=1 is the HA layout: 3 broker nodes in one cluster, 2 API nodes behind HAProxy, 2 schedulers.
STRATUS_HA=${STRATUS_HA:-0}
if [ "$STRATUS_HA" = 1 ]; then
    STRATUS_RABBIT_NODES=${STRATUS_RABBIT_NODES:-3}
    STRATUS_API_NODES=${STRATUS_API_NODES:-2}
    STRATUS_SCHEDULERS=${STRATUS_SCHEDULERS:-2}
else
    STRATUS_RABBIT_NODES=${STRATUS_RABBIT_NODES:-1}
    STRATUS_API_NODES=${STRATUS_API_NODES:-1}
    STRATUS_SCHEDULERS=${STRATUS_SCHEDULERS:-1}
fi
# How each service orders the broker nodes (its first is its preferred node; see docs/ha.md).
STRATUS_FAILOVER_STRATEGY=${STRATUS_FAILOVER_STRATEGY:-roundrobin}
# Python services to run (subset of: api scheduler compute network).
STRATUS_SERVICES=${STRATUS_SERVICES:-api scheduler compute network}
STRATUS_HOST=${STRATUS_HOST:-$(hostname)}

# --- ports (all on loopback) --------------------------------------------------------------------------
STRATUS_BIND=${STRATUS_BIND:-127.0.0.1}
STRATUS_PG_PORT=${STRATUS_PG_PORT:-5432}
STRATUS_RABBIT_PORT=${STRATUS_RABBIT_PORT:-5672}          # node i listens on STRATUS_RABBIT_PORT + i - 1
STRATUS_RABBIT_DIST_PORT=${STRATUS_RABBIT_DIST_PORT:-25672} # node i: + i - 1
STRATUS_EPMD_PORT=${STRATUS_EPMD_PORT:-4370}                # private epmd, not the system one on 4369
STRATUS_API_PORT=${STRATUS_API_PORT:-18080}                 # API node i: + i - 1
STRATUS_LB_PORT=${STRATUS_LB_PORT:-8080}                    # HAProxy frontend = public endpoint

# --- credentials (devstack-grade: loopback only) ------------------------------------------------------
STRATUS_DB_USER=${STRATUS_DB_USER:-stratus}
STRATUS_DB_PASSWORD=${STRATUS_DB_PASSWORD:-stratus}
STRATUS_DB_NAME=${STRATUS_DB_NAME:-stratus}
STRATUS_RABBIT_USER=${STRATUS_RABBIT_USER:-guest}
STRATUS_RABBIT_PASSWORD=${STRATUS_RABBIT_PASSWORD:-guest}

# --- bootstrap ----------------------------------------------------------------------------------------
STRATUS_IMAGE_NAME=${STRATUS_IMAGE_NAME:-tiny}
STRATUS_IMAGE_FILE=${STRATUS_IMAGE_FILE:-$STRATUS_DATA/images/stratus-guest.qcow2}
STRATUS_NETWORK_NAME=${STRATUS_NETWORK_NAME:-private}
STRATUS_SUBNET_CIDR=${STRATUS_SUBNET_CIDR:-10.10.0.0/24}
STRATUS_REGION=${STRATUS_REGION:-RegionOne}

# --- timeouts (seconds) -------------------------------------------------------------------------------
STRATUS_API_TIMEOUT=${STRATUS_API_TIMEOUT:-90}
STRATUS_STOP_TIMEOUT=${STRATUS_STOP_TIMEOUT:-45} # services drain up to ~35 s on SIGTERM

STRATUS_PERSISTED_VARS="STRATUS_BASE STRATUS_DATA STRATUS_LOGS STRATUS_RUN STRATUS_VENV STRATUS_OPENRC
STRATUS_CONF_DIR STRATUS_CONF STRATUS_CLOUDS_YAML STRATUS_HA STRATUS_RABBIT_NODES STRATUS_API_NODES
STRATUS_SCHEDULERS STRATUS_FAILOVER_STRATEGY STRATUS_SERVICES STRATUS_HOST STRATUS_BIND STRATUS_PG_PORT STRATUS_RABBIT_PORT STRATUS_RABBIT_DIST_PORT
STRATUS_EPMD_PORT STRATUS_API_PORT STRATUS_LB_PORT STRATUS_IMAGE_FILE"

DEVSTACK_DIR=${DEVSTACK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
STRATUS_REPO=${STRATUS_REPO:-$(cd "$DEVSTACK_DIR/.." && pwd)}

# --- output -------------------------------------------------------------------------------------------
_ts() { date +%H:%M:%S; }
log() { printf '%s %s\n' "$(_ts)" "$*" >&2; }
warn() { printf '%s WARNING: %s\n' "$(_ts)" "$*" >&2; }
die() {
    printf '%s ERROR: %s\n' "$(_ts)" "$*" >&2
    exit 1
}

# Milliseconds since the epoch.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Format milliseconds as seconds with one decimal.
fmt_ms() { printf '%d.%01ds' $(($1 / 1000)) $((($1 % 1000) / 100)); }

# phase NAME CMD...: run CMD, time it and record the time for the summary.
PHASE_NAMES=()
PHASE_TIMES=()
phase() {
    local name=$1 t0 dt
    shift
    log "==> $name"
    t0=$(now_ms)
    "$@"
    dt=$(($(now_ms) - t0))
    PHASE_NAMES+=("$name")
    PHASE_TIMES+=("$dt")
    log "<== $name ($(fmt_ms "$dt"))"
}

print_phase_times() {
    local i
    for i in "${!PHASE_NAMES[@]}"; do
        printf '  %-28s %8s\n' "${PHASE_NAMES[$i]}" "$(fmt_ms "${PHASE_TIMES[$i]}")"
    done
}

# stack.sh and unstack.sh hold an flock on this fd; every daemon is started with "9>&-" so that it does
# not inherit the lock and keep it after the script ends.
STRATUS_LOCK_FD=9

# --- environment --------------------------------------------------------------------------------------
# systemd is PID 1 (as opposed to a container or a VM started with another init).
have_systemd() { [ -d /run/systemd/system ]; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "$0 must run as root (it starts system daemons and writes /etc)"
}

ensure_dirs() {
    mkdir -p "$STRATUS_BASE" "$STRATUS_DATA" "$STRATUS_LOGS" "$STRATUS_RUN"
    # The postgres user must be able to reach its data directory below these.
    chmod 755 "$STRATUS_BASE" "$STRATUS_DATA" "$STRATUS_LOGS" "$STRATUS_RUN"
}

save_stack_env() {
    local v f=$STRATUS_RUN/stack.env
    {
        echo "# Settings stack.sh used on $(date -Is); read by unstack.sh"
        for v in $STRATUS_PERSISTED_VARS; do
            printf '%s=%q\n' "$v" "${!v}"
        done
    } >"$f.tmp"
    mv -f "$f.tmp" "$f"
}

# A random secret of N alphanumeric characters (default 32).
random_secret() {
    local n=${1:-32} s=""
    while [ ${#s} -lt "$n" ]; do
        s+=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    done
    echo "${s:0:$n}"
}

# persistent_secret FILE [LENGTH]: print the secret kept in FILE, creating it on first use (and replacing
# one shorter than LENGTH, default 24, as left by an older version).
persistent_secret() {
    local f=$1 n=${2:-24}
    if [ ! -s "$f" ] || [ "$(head -n 1 "$f" | tr -d '\n' | wc -c)" -lt "$n" ]; then
        mkdir -p "$(dirname "$f")"
        (
            umask 077
            random_secret "$n" >"$f.tmp"
        )
        mv -f "$f.tmp" "$f"
    fi
    head -n 1 "$f"
}

# --- waiting ------------------------------------------------------------------------------------------
# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_for DESCRIPTION TIMEOUT CMD...: poll CMD every 0.2 s until it succeeds; false on timeout.
wait_for() {
    local what=$1 timeout=$2 deadline
    shift 2
    deadline=$(($(now_ms) + timeout * 1000))
    until "$@"; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            warn "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# --- processes ----------------------------------------------------------------------------------------
# proc_alive PID: the process exists and is not a zombie (an init that is slow to reap, as in some
# containers, leaves exited daemons as zombies, which kill -0 still finds).
proc_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] && [ -n "$state" ]
}

# pid_alive PIDFILE [PATTERN]: the pid in PIDFILE runs (and its command line contains PATTERN, which guards
# against a pid reused after a reboot or a crash).
pid_alive() {
    local pidfile=$1 pattern=${2:-} pid
    [ -s "$pidfile" ] || return 1
    pid=$(head -n 1 "$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    proc_alive "$pid" || return 1
    if [ -n "$pattern" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
    fi
}

# stop_pidfile NAME PIDFILE [PATTERN] [TIMEOUT]: SIGTERM the process, SIGKILL it after TIMEOUT s.
stop_pidfile() {
    local name=$1 pidfile=$2 pattern=${3:-} timeout=${4:-$STRATUS_STOP_TIMEOUT} pid
    if ! pid_alive "$pidfile" "$pattern"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(head -n 1 "$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$name to exit" "$timeout" eval '! proc_alive '"$pid"; then
        warn "$name (pid $pid) ignored SIGTERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
}

# start_daemon NAME [--restart POLICY] -- CMD...: run CMD as a long-lived service named stratus-NAME:
# a transient systemd unit when systemd is PID 1, else under devstack/tools/supervise.sh (restarts it
# with backoff, forwards SIGTERM; pid files $STRATUS_RUN/NAME.pid and NAME.supervisor.pid). stdout and
# stderr go to $STRATUS_LOGS/NAME.out. A running instance is stopped first, so this also restarts.
start_daemon() {
    local name=$1 restart=always
    shift
    if [ "${1:-}" = --restart ]; then
        restart=$2
        shift 2
    fi
    [ "${1:-}" = -- ] && shift
    stop_daemon "$name"
    if have_systemd; then
        local -a envs=()
        local v
        for v in PATH HOME LANG; do envs+=("--setenv=$v=${!v:-}"); done
        [ "$restart" = always ] || [ "$restart" = on-failure ] || restart=no
        systemd-run --quiet --unit="stratus-$name" --description="Stratus $name" \
            -p Restart="$restart" -p RestartSec=3 -p TimeoutStopSec="$STRATUS_STOP_TIMEOUT" \
            -p StandardOutput="append:$STRATUS_LOGS/$name.out" -p StandardError="append:$STRATUS_LOGS/$name.out" \
            "${envs[@]}" -- "$@"
    else
        setsid "$DEVSTACK_DIR/tools/supervise.sh" --name "$name" --run-dir "$STRATUS_RUN" \
            --restart "$restart" --stop-timeout "$STRATUS_STOP_TIMEOUT" -- "$@" \
            >>"$STRATUS_LOGS/$name.out" 2>&1 </dev/null 9>&- &
        disown || true
        # The supervisor writes its pid file at once; wait for the child's too.
        wait_for "$name to start" 10 test -s "$STRATUS_RUN/$name.pid" || die "$name did not start: see $STRATUS_LOGS/$name.out"
    fi
}

# stop_daemon NAME: stop what start_daemon NAME started (no-op when it is not running).
stop_daemon() {
    local name=$1
    if have_systemd; then
        if systemctl is-active --quiet "stratus-$name" 2>/dev/null; then
            log "stopping stratus-$name"
            systemctl stop "stratus-$name" || true
        fi
        systemctl reset-failed "stratus-$name" >/dev/null 2>&1 || true
    fi
    # The supervisor forwards SIGTERM to its child and waits up to its --stop-timeout for it.
    stop_pidfile "$name supervisor" "$STRATUS_RUN/$name.supervisor.pid" "supervise.sh" $((STRATUS_STOP_TIMEOUT + 5))
    # A child left behind by a killed supervisor (NAME.cmd guards against a reused pid).
    if [ -s "$STRATUS_RUN/$name.cmd" ]; then
        stop_pidfile "$name" "$STRATUS_RUN/$name.pid" "$(head -n 1 "$STRATUS_RUN/$name.cmd")"
    fi
    rm -f "$STRATUS_RUN/$name.pid" "$STRATUS_RUN/$name.cmd"
}

# stop_daemons NAME...: stop_daemon for each, all at once (each drains on its own clock).
stop_daemons() {
    local name
    local -a pids=()
    for name in "$@"; do
        stop_daemon "$name" &
        pids+=($!)
    done
    for name in "${pids[@]}"; do
        wait "$name" || true
    done
}

# daemon_running NAME
daemon_running() {
    local name=$1
    if have_systemd && systemctl is-active --quiet "stratus-$name" 2>/dev/null; then
        return 0
    fi
    pid_alive "$STRATUS_RUN/$name.pid"
}
