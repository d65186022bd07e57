#!/bin/bash
# RabbitMQ: N private nodes (default 1) forming one cluster by classic_config peer discovery, following
# /work/shared/notes/RABBITMQ.md: own node names, ports, mnesia/log dirs, a private epmd on loopback, the
# scripts from /usr/lib/rabbitmq/bin (the /usr/sbin wrappers switch to the rabbitmq user), plugins off.
# Node i (1-based) is stratusI@localhost with AMQP on STRATUS_RABBIT_PORT+i-1 and Erlang distribution on
# STRATUS_RABBIT_DIST_PORT+i-1. Sourced after common.sh.

RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}
RABBIT_BASE=${RABBIT_BASE:-$STRATUS_DATA/rabbitmq}

rabbit_nodename() { echo "stratus$1@localhost"; }
rabbit_port() { echo $((STRATUS_RABBIT_PORT + $1 - 1)); }
rabbit_dist_port() { echo $((STRATUS_RABBIT_DIST_PORT + $1 - 1)); }
rabbit_node_dir() { echo "$RABBIT_BASE/stratus$1"; }
rabbit_pidfile() { echo "$STRATUS_RUN/rabbitmq-$1.pid"; }

# transport_url for the Python services: every node, credentials on the first.
rabbit_transport_url() {
    local i hosts=""
    for ((i = 1; i <= STRATUS_RABBIT_NODES; i++)); do
        hosts+="${hosts:+,}$STRATUS_BIND:$(rabbit_port "$i")"
    done
    echo "amqp://$STRATUS_RABBIT_USER:$STRATUS_RABBIT_PASSWORD@$hosts/"
}

epmd_bin() {
    local e
    e=$(command -v epmd || true)
    [ -n "$e" ] || e=$(find /usr/lib/erlang -path '*/bin/epmd' 2>/dev/null | sort -V | tail -n 1)
    [ -n "$e" ] || die "epmd not found (install rabbitmq-server)"
    echo "$e"
}

# Variables every rabbitmq-server/rabbitmqctl invocation for node i needs. Runs in the caller's (sub)shell.
rabbit_env() {
    local i=$1 dir
    dir=$(rabbit_node_dir "$i")
    export HOME=$RABBIT_BASE # holds the shared .erlang.cookie
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(rabbit_nodename "$i")
    export RABBITMQ_NODE_IP_ADDRESS=$STRATUS_BIND
    export RABBITMQ_NODE_PORT
    RABBITMQ_NODE_PORT=$(rabbit_port "$i")
    export RABBITMQ_DIST_PORT
    RABBITMQ_DIST_PORT=$(rabbit_dist_port "$i")
    export RABBITMQ_MNESIA_BASE=$dir/mnesia
    export RABBITMQ_MNESIA_DIR=$dir/mnesia/$RABBITMQ_NODENAME
    export RABBITMQ_LOG_BASE=$STRATUS_LOGS/rabbitmq-$i
    export RABBITMQ_PID_FILE
    RABBITMQ_PID_FILE=$(rabbit_pidfile "$i")
    export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
    export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
    export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
    export RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf.absent # so /etc/rabbitmq/rabbitmq-env.conf is ignored
    export RABBITMQ_SCHEDULER_BIND_TYPE=u
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export ERL_EPMD_PORT=$STRATUS_EPMD_PORT
    export ERL_EPMD_ADDRESS=127.0.0.1
}

rabbitmqctl_node() {
    local i=$1
    shift
    (
        rabbit_env "$i"
        "$RABBIT_BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"
    )
}

rabbit_write_config() {
    local i=$1 n=$2 dir j
    dir=$(rabbit_node_dir "$i")
    mkdir -p "$dir/mnesia" "$STRATUS_LOGS/rabbitmq-$i"
    echo '[].' >"$dir/enabled_plugins"
    # A quorum queue's leader ticks (refreshes its metrics) every 30 s instead of 5 s: each compute host has two
    # quorum queues, and at 1,000 hosts the default ticks alone kept 8% of a core busy on an idle broker.
    echo '[{rabbit, [{quorum_tick_interval, 30000}]}].' >"$dir/advanced.config"
    {
        echo "# Written by devstack/lib/rabbitmq.sh on every stack.sh run."
        echo "listeners.tcp.1 = $STRATUS_BIND:$(rabbit_port "$i")"
        # guest may log in, but only over loopback (the broker's default; every listener is loopback).
        echo "loopback_users.guest = true"
        echo "log.file.level = info"
        echo "log.console = false"
        if [ "$n" -gt 1 ]; then
            echo "cluster_name = stratus"
            echo "cluster_formation.peer_discovery_backend = classic_config"
            for ((j = 1; j <= n; j++)); do
                echo "cluster_formation.classic_config.nodes.$j = $(rabbit_nodename "$j")"
            done
        fi
    } >"$dir/rabbitmq.conf"
}

start_epmd() {
    local epmd
    epmd=$(epmd_bin)
    if ERL_EPMD_PORT=$STRATUS_EPMD_PORT "$epmd" -names >/dev/null 2>&1; then
        return 0
    fi
    if have_systemd; then
        systemctl reset-failed stratus-epmd >/dev/null 2>&1 || true
        systemd-run --quiet --unit=stratus-epmd --description="Stratus private epmd" \
            -- "$epmd" -port "$STRATUS_EPMD_PORT" -address 127.0.0.1
    else
        "$epmd" -daemon -port "$STRATUS_EPMD_PORT" -address 127.0.0.1 9>&-
    fi
    wait_for "epmd on port $STRATUS_EPMD_PORT" 10 port_open 127.0.0.1 "$STRATUS_EPMD_PORT" || die "epmd did not start"
}

stop_epmd() {
    local epmd
    if have_systemd && systemctl is-active --quiet stratus-epmd 2>/dev/null; then
        systemctl stop stratus-epmd || true
        return 0
    fi
    epmd=$(epmd_bin)
    if ERL_EPMD_PORT=$STRATUS_EPMD_PORT "$epmd" -names >/dev/null 2>&1; then
        log "stopping epmd (port $STRATUS_EPMD_PORT)"
        "$epmd" -port "$STRATUS_EPMD_PORT" -kill >/dev/null 2>&1 || warn "epmd on $STRATUS_EPMD_PORT refused to stop"
    fi
}

rabbit_node_running() { pid_alive "$(rabbit_pidfile "$1")" beam; }

# Start node i in the background (no waiting). A running node is left alone.
start_rabbit_node() {
    local i=$1 n=${2:-$STRATUS_RABBIT_NODES}
    rabbit_write_config "$i" "$n"
    if rabbit_node_running "$i"; then
        log "RabbitMQ node $(rabbit_nodename "$i") already running"
        return 0
    fi
    log "starting RabbitMQ node $(rabbit_nodename "$i") on $STRATUS_BIND:$(rabbit_port "$i")"
    (
        rabbit_env "$i"
        rm -f "$RABBITMQ_PID_FILE"
        if have_systemd; then
            local -a envs=()
            local v
            for v in $(compgen -e | grep -E '^(RABBITMQ_|ERL_|HOME$)'); do envs+=("--setenv=$v=${!v}"); done
            systemctl reset-failed "stratus-rabbitmq-$i" >/dev/null 2>&1 || true
            # Type=notify: the broker signals readiness itself. --no-block: cluster peers start together.
            systemd-run --quiet --no-block --unit="stratus-rabbitmq-$i" --description="Stratus RabbitMQ node $i" \
                -p Type=notify -p NotifyAccess=all -p TimeoutStartSec=600 -p TimeoutStopSec=120 \
                -p Restart=on-failure -p RestartSec=5 -p LimitNOFILE=65536 "${envs[@]}" \
                -- "$RABBIT_BIN/rabbitmq-server"
        else
            # The script is a wrapper: the beam's pid lands in RABBITMQ_PID_FILE. The wrapper's pid only
            # tells wait_rabbit_node that the node died early. cd: an erl_crash.dump lands in the node dir.
            cd "$(rabbit_node_dir "$i")" || exit 1
            setsid "$RABBIT_BIN/rabbitmq-server" >>"$STRATUS_LOGS/rabbitmq-$i.out" 2>&1 </dev/null 9>&- &
            echo $! >"$STRATUS_RUN/rabbitmq-$i.wrapper.pid"
            disown || true
        fi
    )
}

# rabbit_node_up i: AMQP port open; fails the wait at once (status 2) when the node process is gone.
rabbit_node_up() {
    local i=$1
    port_open "$STRATUS_BIND" "$(rabbit_port "$i")" && return 0
    if have_systemd; then
        systemctl is-failed --quiet "stratus-rabbitmq-$i" 2>/dev/null && return 2
    elif [ -f "$STRATUS_RUN/rabbitmq-$i.wrapper.pid" ] && ! pid_alive "$STRATUS_RUN/rabbitmq-$i.wrapper.pid"; then
        return 2
    fi
    return 1
}

rabbit_node_failed() {
    local i=$1
    warn "RabbitMQ node $(rabbit_nodename "$i") failed to start; last lines of $STRATUS_LOGS/rabbitmq-$i.out:"
    tail -n 5 "$STRATUS_LOGS/rabbitmq-$i.out" >&2 2>/dev/null || true
    die "RabbitMQ node $i did not start: see $STRATUS_LOGS/rabbitmq-$i/ and $STRATUS_LOGS/rabbitmq-$i.out"
}

# Wait until node i accepts AMQP and has booted the broker application.
wait_rabbit_node() {
    local i=$1 timeout=${2:-120} deadline rc
    deadline=$(($(now_ms) + timeout * 1000))
    while :; do
        rc=0
        rabbit_node_up "$i" || rc=$?
        [ "$rc" = 0 ] && break
        if [ "$rc" = 2 ] || [ "$(now_ms)" -ge "$deadline" ]; then
            rabbit_node_failed "$i"
        fi
        sleep 0.2
    done
    # Polling the port first matters: await_startup fails at once if the node is not yet in epmd.
    rabbitmqctl_node "$i" await_startup --timeout 60 >/dev/null ||
        die "RabbitMQ node $i did not finish booting: see $STRATUS_LOGS/rabbitmq-$i/"
}

# start_rabbitmq [N]: start N nodes together (they form one cluster) and wait for all of them.
start_rabbitmq() {
    local n=${1:-$STRATUS_RABBIT_NODES} i running
    mkdir -p "$RABBIT_BASE"
    chmod 700 "$RABBIT_BASE"
    if [ ! -s "$RABBIT_BASE/.erlang.cookie" ]; then
        (
            umask 077
            random_secret 32 >"$RABBIT_BASE/.erlang.cookie"
        )
    fi
    chmod 400 "$RABBIT_BASE/.erlang.cookie"
    start_epmd
    for ((i = 1; i <= n; i++)); do
        start_rabbit_node "$i" "$n"
    done
    for ((i = 1; i <= n; i++)); do
        wait_rabbit_node "$i"
    done
    if [ "$n" -gt 1 ]; then
        # Peer discovery forms the cluster while the nodes boot; check that it did.
        running=$(rabbitmqctl_node 1 cluster_status --formatter json 2>/dev/null |
            "$STRATUS_PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))' || echo 0)
        [ "$running" = "$n" ] || die "RabbitMQ cluster has $running of $n nodes running: see $STRATUS_LOGS/rabbitmq-*/"
        log "RabbitMQ cluster of $n nodes is up"
    fi
}

# stop_rabbit_node i: graceful stop (rabbitmqctl stop waits for the beam), SIGTERM as a fallback.
stop_rabbit_node() {
    local i=$1 pidfile
    pidfile=$(rabbit_pidfile "$i")
    if have_systemd && systemctl is-active --quiet "stratus-rabbitmq-$i" 2>/dev/null; then
        log "stopping stratus-rabbitmq-$i"
        systemctl stop "stratus-rabbitmq-$i" || true
    elif rabbit_node_running "$i"; then
        log "stopping RabbitMQ node $(rabbit_nodename "$i")"
        rabbitmqctl_node "$i" stop "$pidfile" >/dev/null 2>&1 || true
        stop_pidfile "rabbitmq node $i" "$pidfile" beam 30
    fi
    rm -f "$pidfile" "$STRATUS_RUN/rabbitmq-$i.wrapper.pid"
}

# stop_rabbitmq: every node this cloud has (counting node dirs, in case N changed), then epmd.
stop_rabbitmq() {
    local i n=$STRATUS_RABBIT_NODES d
    for d in "$RABBIT_BASE"/stratus*; do
        [ -d "$d" ] || continue
        i=${d##*/stratus}
        [[ "$i" =~ ^[0-9]+$ ]] && [ "$i" -gt "$n" ] && n=$i
    done
    # Stop in reverse order: the last node stopped is the one that boots first next time.
    for ((i = n; i >= 1; i--)); do
        stop_rabbit_node "$i"
    done
    stop_epmd
}
