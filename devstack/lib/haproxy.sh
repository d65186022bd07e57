#!/bin/bash
# HAProxy: the public endpoint ($STRATUS_BIND:$STRATUS_LB_PORT) in front of the API nodes, rendered from
# etc/haproxy/haproxy.cfg.template and run in the foreground under start_daemon (so it is supervised like
# the services and its access log lands in $STRATUS_LOGS/haproxy.out). Sourced after common.sh.

HAPROXY_CFG=${HAPROXY_CFG:-$STRATUS_CONF_DIR/haproxy.cfg}
HAPROXY_TEMPLATE=${HAPROXY_TEMPLATE:-$STRATUS_REPO/etc/haproxy/haproxy.cfg.template}

# "server" lines for API nodes 1..N on STRATUS_API_PORT, +1, ...
haproxy_api_servers() {
    local i n=$1
    for ((i = 1; i <= n; i++)); do
        printf '    server api-%d %s:%d check inter 500ms fastinter 200ms fall 2 rise 2\n' "$i" "$STRATUS_BIND" $((STRATUS_API_PORT + i - 1))
    done
}

render_haproxy_config() {
    local tmp
    [ -r "$HAPROXY_TEMPLATE" ] || die "missing $HAPROXY_TEMPLATE"
    mkdir -p "$(dirname "$HAPROXY_CFG")"
    tmp=$(mktemp "$HAPROXY_CFG.XXXXXX")
    # The literal names tell envsubst which variables to replace (nothing else in the file is touched).
    # shellcheck disable=SC2016
    (
        export STRATUS_LB_BIND="$STRATUS_BIND:$STRATUS_LB_PORT"
        STRATUS_API_SERVERS=$(haproxy_api_servers "$STRATUS_API_NODES")
        export STRATUS_API_SERVERS
        export STRATUS_HAPROXY_SOCK="$STRATUS_RUN/haproxy.sock"
        envsubst '${STRATUS_LB_BIND} ${STRATUS_API_SERVERS} ${STRATUS_HAPROXY_SOCK}' <"$HAPROXY_TEMPLATE" >"$tmp"
    )
    if ! haproxy -c -q -f "$tmp"; then
        mv -f "$tmp" "$HAPROXY_CFG.rejected"
        die "haproxy rejects the rendered config (kept as $HAPROXY_CFG.rejected)"
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$HAPROXY_CFG"
}

start_haproxy() {
    render_haproxy_config
    # Restarting drops in-flight requests: acceptable for stack.sh, which restarts the API anyway.
    start_daemon haproxy -- "$(command -v haproxy)" -db -f "$HAPROXY_CFG"
    wait_for "HAProxy on $STRATUS_BIND:$STRATUS_LB_PORT" 10 port_open "$STRATUS_BIND" "$STRATUS_LB_PORT" ||
        die "HAProxy did not listen: $(tail -n 5 "$STRATUS_LOGS/haproxy.out")"
}

stop_haproxy() { stop_daemon haproxy; }
