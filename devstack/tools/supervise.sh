#!/bin/bash
# A minimal process supervisor for machines where systemd is not PID 1.
#
#   supervise.sh --name NAME --run-dir DIR [--restart always|on-failure|no] [--stop-timeout S] -- CMD [ARG...]
#
# Runs CMD as a child and restarts it when it exits (always: any exit; on-failure: non-zero exit or
# death by signal), waiting 1 s, 2 s, 4 s ... up to 30 s between quick successive failures; a child that
# ran at least 30 s resets the backoff. Writes DIR/NAME.supervisor.pid (its own pid), DIR/NAME.pid (the
# current child's pid) and DIR/NAME.cmd (the child's program, for pid checks). Logs to stdout.
#
# Signals: SIGTERM/SIGINT are forwarded to the child as SIGTERM; the supervisor waits up to --stop-timeout
# seconds (default 20) for it, SIGKILLs it if needed, removes its pid files and exits 0.
# SIGHUP restarts the child at once (SIGTERM, wait, start again).
set -uo pipefail

name="" run_dir="" restart=always stop_timeout=20
while [ $# -gt 0 ]; do
    case "$1" in
        --name) name=$2; shift 2 ;;
        --run-dir) run_dir=$2; shift 2 ;;
        --restart) restart=$2; shift 2 ;;
        --stop-timeout) stop_timeout=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
if [ -z "$name" ] || [ -z "$run_dir" ] || [ $# -eq 0 ]; then
    echo "usage: $0 --name NAME --run-dir DIR [--restart always|on-failure|no] [--stop-timeout S] -- CMD..." >&2
    exit 2
fi
case "$restart" in always | on-failure | no) ;; *) echo "bad --restart $restart" >&2; exit 2 ;; esac

sup_pidfile=$run_dir/$name.supervisor.pid
child_pidfile=$run_dir/$name.pid
mkdir -p "$run_dir"
echo $$ >"$sup_pidfile"
basename "$1" >"$run_dir/$name.cmd"

say() { printf '%s supervise[%s]: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$name" "$*"; }

child=""
sleeper=""
stopping=0
restarting=0
on_term() {
    stopping=1
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    [ -n "$sleeper" ] && kill -TERM "$sleeper" 2>/dev/null
}
on_hup() { restarting=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; }
trap on_term TERM INT
trap on_hup HUP
cleanup() { rm -f "$sup_pidfile" "$child_pidfile" "$run_dir/$name.cmd"; }
trap cleanup EXIT

# wait_child: wait until the child has exited, whatever signals arrive meanwhile; sets rc.
# Once a stop is asked for, the child gets stop_timeout seconds before SIGKILL.
wait_child() {
    local deadline=""
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break
        # wait was interrupted by a trapped signal and the child still runs.
        if [ "$stopping" = 1 ] || [ "$restarting" = 1 ]; then
            [ -n "$deadline" ] || deadline=$((SECONDS + stop_timeout))
            while kill -0 "$child" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.1
            done
            if kill -0 "$child" 2>/dev/null; then
                say "pid $child did not exit within ${stop_timeout}s of SIGTERM: SIGKILL"
                kill -KILL "$child" 2>/dev/null
            fi
        fi
    done
    wait "$child" 2>/dev/null
    rc=$?
}

backoff=1
rc=0
while :; do
    started=$SECONDS
    "$@" &
    child=$!
    echo "$child" >"$child_pidfile"
    say "started pid $child: $*"
    wait_child
    rm -f "$child_pidfile"
    child=""
    ran=$((SECONDS - started))
    if [ "$stopping" = 1 ]; then
        say "stopped (exit status $rc)"
        exit 0
    fi
    if [ "$restarting" = 1 ]; then
        say "restarting on SIGHUP (exit status $rc)"
        restarting=0
        backoff=1
        continue
    fi
    if [ "$rc" -gt 128 ]; then
        how="killed by signal $((rc - 128))"
    else
        how="exit status $rc"
    fi
    if [ "$restart" = no ] || { [ "$restart" = on-failure ] && [ "$rc" = 0 ]; }; then
        say "exited ($how) after ${ran}s; not restarting (--restart $restart)"
        exit 0
    fi
    [ "$ran" -ge 30 ] && backoff=1
    say "exited ($how) after ${ran}s; restarting in ${backoff}s"
    sleep "$backoff" &
    sleeper=$!
    wait "$sleeper" 2>/dev/null
    sleeper=""
    [ "$stopping" = 1 ] && { say "stopped while waiting to restart"; exit 0; }
    backoff=$((backoff * 2))
    [ "$backoff" -gt 30 ] && backoff=30
done
