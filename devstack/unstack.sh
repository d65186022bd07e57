#!/bin/bash
# Stop what devstack/stack.sh started: the Stratus services, HAProxy, libvirtd and virtlogd (only when
# stack.sh started them), RabbitMQ and its epmd, PostgreSQL. Data stays unless --purge (or
# STRATUS_PURGE=1), which also deletes $STRATUS_DATA, the logs, the run directory, the generated
# configuration, openrc and the 'stratus' entry of clouds.yaml (the virtualenv is kept).
#
# Guests are NOT touched: libvirt domains keep running as qemu processes after libvirtd stops. Destroying
# them is the compute service's job (delete the servers first) or the operator's (virsh destroy ...).
#
#   devstack/unstack.sh [--purge]
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail

PURGE=${STRATUS_PURGE:-0}
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h | --help)
            sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (usage: $0 [--purge])" >&2
            exit 2
            ;;
    esac
done

DEVSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Act on the cloud stack.sh made, with the settings it recorded.
_run=${STRATUS_RUN:-${STRATUS_BASE:-/opt/stratus}/run}
if [ -f "$_run/stack.env" ]; then
    # shellcheck disable=SC1091
    source "$_run/stack.env"
fi
# shellcheck source=lib/common.sh
source "$DEVSTACK_DIR/lib/common.sh"
# shellcheck source=lib/postgres.sh
source "$DEVSTACK_DIR/lib/postgres.sh"
# shellcheck source=lib/rabbitmq.sh
source "$DEVSTACK_DIR/lib/rabbitmq.sh"
# shellcheck source=lib/libvirt.sh
source "$DEVSTACK_DIR/lib/libvirt.sh"
# shellcheck source=lib/haproxy.sh
source "$DEVSTACK_DIR/lib/haproxy.sh"
# shellcheck source=lib/stratus.sh
source "$DEVSTACK_DIR/lib/stratus.sh"

require_root
T0=$(now_ms)
if [ -d "$STRATUS_RUN" ]; then
    exec 9>"$STRATUS_RUN/stack.lock"
    flock -w 60 9 || die "another stack.sh or unstack.sh is running (lock $STRATUS_RUN/stack.lock)"
fi

phase "stratus services" stop_stratus_services
# dnsmasq and metadata servers outlive stratus-network on purpose (zero-downtime restarts); stop them here.
network_teardown() {
    local -a conf_args
    mapfile -t conf_args < <(stratus_conf_args)
    [ -x "$STRATUS_VENV/bin/stratus-network" ] && [ -f "$STRATUS_CONF" ] || return 0
    "$STRATUS_VENV/bin/stratus-network" "${conf_args[@]}" --teardown || warn "network teardown failed"
}
phase "dhcp/dns/metadata namespaces" network_teardown
phase "haproxy" stop_haproxy
phase "libvirtd + virtlogd" stop_libvirt
phase "rabbitmq" stop_rabbitmq
phase "postgresql" stop_postgres

purge() {
    log "purging $STRATUS_DATA $STRATUS_LOGS $STRATUS_RUN and generated configuration"
    rm -rf "$STRATUS_DATA" "$STRATUS_LOGS"
    rm -f "$STRATUS_CONF" "$HAPROXY_CFG" "$STRATUS_CONF_DIR"/api-*.conf "$STRATUS_OPENRC"
    rmdir "$STRATUS_CONF_D" "$STRATUS_CONF_DIR" 2>/dev/null || true
    if [ -f "$STRATUS_CLOUDS_YAML" ] && [ -x "$STRATUS_VENV/bin/python" ]; then
        CLOUDS_YAML=$STRATUS_CLOUDS_YAML "$STRATUS_VENV/bin/python" - <<'EOF' || warn "could not edit $STRATUS_CLOUDS_YAML"
import os
import yaml

path = os.environ["CLOUDS_YAML"]
with open(path) as f:
    data = yaml.safe_load(f) or {}
data.get("clouds", {}).pop("stratus", None)
if data.get("clouds"):
    with open(path, "w") as f:
        yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
else:
    os.remove(path)
EOF
    fi
    # The lock file is open on fd 9: remove the run directory last.
    exec 9>&-
    rm -rf "$STRATUS_RUN"
}
[ "$PURGE" = 1 ] && phase "purge" purge

print_phase_times
printf '  %-28s %8s\n' "total" "$(fmt_ms $(($(now_ms) - T0)))"
